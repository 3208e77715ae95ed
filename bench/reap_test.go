package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// harnessEnv, when set in the environment, makes this test binary run the
// harness's main on the orphan suite instead of the tests.
const harnessEnv = "KUASAR_BENCH_TEST_HARNESS"

func TestMain(m *testing.M) {
	if os.Getenv(harnessEnv) != "" {
		suites = []suite{{name: "orphan", pkg: "./testdata/orphan", bench: ".", what: "processes that outlive an interrupted suite"}}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestInterruptKillsEverything runs the harness on a suite whose benchmark
// starts a daemonised grandchild (its own session, parent gone: how QEMU and
// containerd escape a process group), a direct child and a mounted temporary
// directory, interrupts the harness with SIGINT as ^C would, and checks that
// every process it started is gone, and the temporary directory and its mount
// with them.
func TestInterruptKillsEverything(t *testing.T) {
	dir := t.TempDir()
	reportPath := filepath.Join(dir, "report")
	cmd := exec.Command(os.Args[0], "-out", filepath.Join(dir, "out"), "-count", "1", "-suite", "orphan")
	cmd.Env = append(os.Environ(), harnessEnv+"=1", "ORPHAN_REPORT="+reportPath)
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	cmd.WaitDelay = 5 * time.Second // the pipe may be held by what the harness failed to kill
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	// The suite compiles first: wait for its report with a generous deadline
	// (a loaded machine), polling.
	var report []byte
	for deadline := time.Now().Add(5 * time.Minute); ; {
		var err error
		if report, err = os.ReadFile(reportPath); err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("harness exited before the benchmark started: %v\n%s", waitErr, output.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the orphan benchmark did not start in 5 min:\n%s", output.String())
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	var orphan, child int
	var tmp string
	if _, err := fmt.Sscanf(string(report), "%d %d %s", &orphan, &child, &tmp); err != nil {
		t.Fatalf("report %q: %v", report, err)
	}

	// Hold a pidfd on every process the harness started (go, the test
	// binary, both sleeps) before interrupting, so that pid reuse cannot
	// fool the checks and the cleanup kills only those.
	pids := map[int]string{orphan: "daemonised sleep (grandchild)", child: "sleep (child of the benchmark)"}
	ds, err := descendants(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for pid := range ds {
		if _, ok := pids[pid]; !ok {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			pids[pid] = strings.TrimSpace(string(comm))
		}
	}
	fds := map[int]int{}
	for pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatalf("pidfd_open(%d, %s): %v", pid, pids[pid], err)
		}
		fds[pid] = fd
		t.Cleanup(func() {
			unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			unix.Close(fd)
		})
	}

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) {
			t.Errorf("interrupted harness: %v, want a failure exit", waitErr)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("harness still running 2 min after SIGINT:\n%s", output.String())
	}

	for pid, fd := range fds {
		// A pidfd is readable once its process has exited: one probe, one
		// deadline.
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 30_000)
		if err != nil || n != 1 {
			t.Errorf("pid %d (%s) still running 30 s after the harness exited (%v)", pid, pids[pid], err)
		}
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the benchmark's temporary directory %s is left: %v", tmp, err)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), " "+tmp+" ") {
		t.Errorf("the tmpfs on %s is still mounted", tmp)
	}
	t.Logf("harness output:\n%s", output.String())
}
