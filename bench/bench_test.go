package bench

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/bench/internal/reap"
	"github.com/kuasar-go/kuasar/bench/internal/rig"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// harnessEnv, when set, makes this test binary run the harness on the
// "test-children" scenario instead of the tests (TestInterruptKillsEverything).
const harnessEnv = "KUASAR_BENCH_TEST_HARNESS"

func TestMain(m *testing.M) {
	if report := os.Getenv(harnessEnv); report != "" {
		os.Exit(runTestHarness(report))
	}
	os.Exit(m.Run())
}

// runTestHarness runs Run, as `kuasar bench` does, on a scenario that
// starts a process tree the way the real ones do (a direct child in its own
// process group, a daemonised grandchild in its own session whose parent
// exits) and then blocks until interrupted.
func runTestHarness(report string) int {
	registry = append(registry, scenario{name: "test-children", summary: "starts processes and blocks", run: func(ctx context.Context, r *runner) error {
		child, err := rig.Start(nil, "sleep", "3600")
		if err != nil {
			return err
		}
		out, err := exec.Command("sh", "-c", "setsid sleep 3600 </dev/null >/dev/null 2>&1 & echo $!").Output()
		if err != nil {
			return err
		}
		pids := fmt.Sprintf("%d %s\n", child.Pid(), strings.TrimSpace(string(out)))
		if err := os.WriteFile(report+".tmp", []byte(pids), 0o600); err != nil {
			return err
		}
		if err := os.Rename(report+".tmp", report); err != nil {
			return err
		}
		<-ctx.Done()
		return ctx.Err()
	}})
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	err := Run(ctx, Options{Scenarios: []string{"test-children"}, StateDir: filepath.Dir(report), Stdout: os.Stdout, Stderr: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 1
	}
	return 0
}

// TestInterruptKillsEverything starts the harness on a scenario that starts
// a child and a daemonised grandchild (how containerd's shims and QEMU
// escape a process group), interrupts it with SIGINT as ^C would, and
// checks that every process it started is gone.
func TestInterruptKillsEverything(t *testing.T) {
	dir := t.TempDir()
	report := filepath.Join(dir, "pids")
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), harnessEnv+"="+report)
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
	var pidsText []byte
	for deadline := time.Now().Add(2 * time.Minute); ; {
		var err error
		if pidsText, err = os.ReadFile(report); err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("harness exited before its scenario started: %v\n%s", waitErr, output.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scenario did not start in 2 min:\n%s", output.String())
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	pids := map[int]string{}
	for i, f := range strings.Fields(string(pidsText)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("report %q: %v", pidsText, err)
		}
		pids[pid] = []string{"sleep (child, own process group)", "daemonised sleep (grandchild, own session)"}[i]
	}
	ds, err := reap.Descendants(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for pid := range pids {
		if _, ok := ds[pid]; !ok {
			t.Fatalf("%s (pid %d) is not a descendant of the harness: the subreaper did not take it (%v)", pids[pid], pid, ds)
		}
	}
	// pidfds, taken before the interrupt, make the checks immune to pid reuse.
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
		// A pidfd is readable once its process has exited.
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 30_000)
		if err != nil || n != 1 {
			t.Errorf("pid %d (%s) still running 30 s after the harness exited (%v)", pid, pids[pid], err)
		}
	}
	if !strings.Contains(output.String(), "interrupted") {
		t.Errorf("the harness did not say it was interrupted:\n%s", output.String())
	}
}

func TestSelectScenarios(t *testing.T) {
	var quick, all []string
	for _, s := range registry {
		all = append(all, s.name)
		if s.quick {
			quick = append(quick, s.name)
		}
	}
	if len(quick) == 0 || len(quick) == len(all) {
		t.Fatalf("quick scenarios %v of %v: a quick run should be a proper subset", quick, all)
	}
	tests := []struct {
		name    string
		args    []string
		quick   bool
		want    []string
		wantErr error
	}{
		{"none: all", nil, false, all, nil},
		{"none, quick: the quick ones", nil, true, quick, nil},
		{"named: registry order, once each", []string{"density", "wasm-start", "density"}, false, []string{"wasm-start", "density"}, nil},
		{"named, quick: a slow one still runs", []string{"vm-start"}, true, []string{"vm-start"}, nil},
		{"unknown", []string{"wasm-start", "nope"}, false, nil, errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := selectScenarios(tt.args, tt.quick)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), "wasm-start") {
					t.Fatalf("error %v, want %v listing the scenarios", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := namesOf(sel); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLockRefusesSecondRun(t *testing.T) {
	state := t.TempDir()
	dir := filepath.Join(state, "bench")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	unlock, err := lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	err = Run(context.Background(), Options{Scenarios: []string{"compile"}, StateDir: state, Stderr: &stderr})
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), fmt.Sprintf("process %d", os.Getpid())) {
		t.Fatalf("second run on a locked state directory: %v, want ErrUnavailable naming pid %d", err, os.Getpid())
	}
	if stderr.Len() != 0 {
		t.Errorf("the refused run started anyway: %s", stderr.String())
	}
	unlock()
	unlock2, err := lock(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}

// TestReportJSONGolden checks the JSON report's shape (field names, units,
// summaries, ratios, curves) against a golden file; -update rewrites it.
func TestReportJSONGolden(t *testing.T) {
	rep := testReport()
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "report.golden.json")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("JSON report differs from %s (go test -update after checking the change):\n%s", golden, buf.String())
	}
	if r := rep.Scenarios[0].Ratios[0].Ratio; r != 100 {
		t.Errorf("kuasar vs runc-run ratio %v, want 100 (0.2 s / 2 ms)", r)
	}
}

// TestWritePlots checks that a report gives the expected charts and that
// each is well-formed XML.
func TestWritePlots(t *testing.T) {
	dir := t.TempDir()
	files, err := writePlots(dir, testReport())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d := xml.NewDecoder(bytes.NewReader(b))
		for {
			if _, err := d.Token(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s is not well-formed XML: %v", f, err)
			}
		}
	}
	want := []string{"wasm-start-cdf.svg", "density-curve1-rss-per-idle-sandbox.svg", "density-bars.svg", "ratios.svg"}
	if !slices.Equal(names, want) {
		t.Errorf("plots %v, want %v", names, want)
	}
}

// testReport is a small report with every kind of figure.
func testReport() *Report {
	t0 := time.Date(2026, 12, 5, 14, 0, 0, 0, time.UTC)
	rep := &Report{Schema: SchemaVersion, Command: "kuasar bench wasm-start density --quick", Quick: true, Started: t0, Finished: t0.Add(90 * time.Second),
		Machine: Machine{CPUs: 2, CPUModel: "Test CPU", MemTotalBytes: 8 << 30, Kernel: "6.1.0", OS: "linux", Arch: "amd64", GoVersion: "go1.26",
			Kuasar: "v0.0.0 (test)", LoadStart: [3]float64{1.5, 1, 0.5}, LoadEnd: [3]float64{2, 1.2, 0.6}}}
	ws := &ScenarioResult{Name: "wasm-start", Summary: "start to exit", Command: "kuasar bench wasm-start --quick", Seconds: 12.5,
		Series: []*Series{
			{Name: "kuasar", Unit: "s", What: "sandbox API", Samples: []float64{0.002, 0.001, 0.003, 0.002, 0.002}},
			{Name: "runc-run", Unit: "s", What: "runc run", Baseline: true, Samples: []float64{0.2, 0.1, 0.3, 0.2, 0.2}},
		},
		Skipped: []string{"wazero-process: not installed"}}
	ws.finish(map[string]float64{"kuasar/runc-run": 30})
	dens := &ScenarioResult{Name: "density", Summary: "idle sandboxes", Command: "kuasar bench density --quick", Seconds: 30,
		Curves: []*Curve{{Name: "RSS per idle sandbox", XLabel: "live sandboxes", YLabel: "KiB", Unit: "KiB", Target: 100,
			Points: []Point{{X: 1, Y: 300}, {X: 1000, Y: 120}}}},
		Error: "interrupted"}
	dens.finish(nil)
	rep.Scenarios = []*ScenarioResult{ws, dens}
	return rep
}

func TestDescribeRatio(t *testing.T) {
	tests := []struct {
		ra   Ratio
		want string
	}{
		{Ratio{Ratio: 42, Low: 30, High: 50}, "42× faster (95% interval 30× to 50×)"},
		{Ratio{Ratio: 2.5, Low: 2, High: 3}, "2.50× faster (95% interval 2.00× to 3.00×)"},
		{Ratio{Ratio: 0.5, Low: 0.25, High: 0.8}, "2.00× slower (95% interval 1.25× to 4.00×)"},
	}
	for _, tt := range tests {
		if got := describeRatio(tt.ra); got != tt.want {
			t.Errorf("describeRatio(%+v) = %q, want %q", tt.ra, got, tt.want)
		}
	}
}
