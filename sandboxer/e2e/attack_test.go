package e2e

// The attacks of issue 7 (containment) tried through a real containerd and
// crictl, as a Kubernetes tenant would: hostile Wasm containers against the
// host's files, the sandboxer's file descriptors and memory, and the other
// pods of the node.

import (
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/testenv"
)

//go:generate wat2wasm testdata/flood.wat -o testdata/flood.wasm

// floodWasm writes 4 KiB lines to stdout forever (testdata/flood.wat).
//
//go:embed testdata/flood.wasm
var floodWasm []byte

// Figures of the rename race: the reader tries this many times or for this
// long, whichever ends first (the attack leaked 59 times in 20,000).
const (
	raceAttempts = 20000
	raceSeconds  = 20
)

// TestRenameRaceAttackCRI is the mount escape of issue 7 through CRI: one
// pod, two Wasm containers sharing one writable host directory (an emptyDir
// or hostPath), container B swapping a directory for a symlink to a host
// directory in a loop, container A opening and creating files through the
// swapped name in a loop. No byte of a file outside the mount may be read
// (no LEAK line, the host secret never in the logs) and nothing outside the
// mount may be written (the host directory next to the mount is unchanged).
func TestRenameRaceAttackCRI(t *testing.T) {
	e := testenv.NewEnv(t)
	const ref = "docker.io/kuasar/race:test"
	importWasm(t, e, fixture(t, "race"), "race.wasm", ref, false)

	for _, tc := range []struct {
		name string
		// linkTarget is the swapper's symlink target given the host
		// directory outside the mount.
		linkTarget func(outside string) string
	}{
		// The attack: an absolute link to a host directory (there
		// /etc). Inside the container the name means a path of its root.
		{"absolute link", func(outside string) string { return outside }},
		// A relative link that climbs out of the mount with "..".
		{"relative link", func(outside string) string { return "../" + filepath.Base(outside) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			base, err := os.MkdirTemp(e.Dir, "race")
			if err != nil {
				t.Fatal(err)
			}
			os.Chmod(base, 0o755)
			shared := filepath.Join(base, "shared")
			outside := filepath.Join(base, "outside")
			secret := "host-secret-" + randHex(t)
			for _, d := range []string{shared, outside, filepath.Join(outside, "sub")} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for name, content := range map[string]string{
				"shadow":     secret,
				"pwned":      "host file, not the guest's",
				"sub/shadow": secret + "-sub",
			} {
				if err := os.WriteFile(filepath.Join(outside, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			before := treeSnapshot(t, outside)
			entriesBefore := dirNames(t, base)

			podName := "race-" + strings.ReplaceAll(tc.name, " ", "-")
			podCfg := podJSON(t, e, podName, nil)
			pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
			t.Cleanup(func() { e.CrictlErr("rmp", "-f", pod) })
			mounts := []criMount{{ContainerPath: "/data", HostPath: shared}}
			// The swapper runs until stopped; the reader bounds the attack.
			swapper := e.Crictl("create", pod, attackCtrJSON(t, e, podName+"-swap", ref, attackCtr{
				args: []string{"swap", "/data", tc.linkTarget(outside), "3600"}, mounts: mounts}), podCfg)
			reader := e.Crictl("create", pod, attackCtrJSON(t, e, podName+"-read", ref, attackCtr{
				args: []string{"read", "/data", fmt.Sprint(raceSeconds), fmt.Sprint(raceAttempts)}, mounts: mounts}), podCfg)
			e.Crictl("start", swapper)
			waitLogLine(t, e, swapper, "ready", 60*time.Second)
			attackStart := time.Now()
			e.Crictl("start", reader)
			summary := waitLogLine(t, e, reader, "attempts=", (raceSeconds+120)*time.Second)
			attackTook := time.Since(attackStart)
			st, _ := containerState(e, swapper)
			if st != "CONTAINER_RUNNING" {
				t.Fatalf("the swapper is %s before the reader ended: the race did not run for the whole attack\nlogs:\n%s", st, e.Crictl("logs", swapper))
			}
			e.Crictl("stop", "--timeout", "2", swapper)
			waitState(t, e, swapper, "CONTAINER_EXITED", 60*time.Second)

			logs, _ := e.CrictlErr("logs", reader)
			kv := keyValues(summary)
			attempts := intField(t, kv, "attempts", summary)
			leaks := intField(t, kv, "leaks", summary)
			inside := intField(t, kv, "inside", summary)
			wrote := intField(t, kv, "wrote", summary)
			t.Logf("%s: %s in %s (attack), %s in all", tc.name, summary, attackTook.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

			var leakLines []string
			for _, line := range strings.Split(logs, "\n") {
				if strings.HasPrefix(line, "LEAK") {
					leakLines = append(leakLines, line)
				}
			}
			if leaks != 0 || len(leakLines) != 0 || strings.Contains(logs, secret) {
				t.Errorf("the guest read a file outside its mount: %d leaks in %d attempts (first at attempt %s), e.g. %q", leaks, attempts, kv["first"], firstN(leakLines, 3))
			}
			if diff := diffSnapshots(before, treeSnapshot(t, outside)); diff != "" {
				t.Errorf("the guest wrote outside its mount (%d creates succeeded in all):\n%s", wrote, diff)
			}
			if got := dirNames(t, base); got != entriesBefore {
				t.Errorf("the entries next to the mount changed: %s, was %s", got, entriesBefore)
			}
			// The attack must really have raced: the reader met the real
			// directory sometimes and a swapped or missing name the other
			// times; else it proved nothing.
			if attempts < 1000 || inside == 0 || inside >= attempts {
				t.Errorf("the attack did not race: %s (want >= 1000 attempts, some but not all reads of the inside file)", summary)
			}
			if attempts < raceAttempts && attackTook < raceSeconds*time.Second {
				t.Errorf("the reader stopped after %d attempts and %s, before %d attempts or %d s", attempts, attackTook, raceAttempts, raceSeconds)
			}
			e.Crictl("rm", swapper)
			e.Crictl("rm", reader)
			removePod(t, e, pod)
		})
	}
	checkNothingLeft(t, e)
}

func randHex(t testing.TB) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// dirNames lists the names in dir, sorted, as one string.
func dirNames(t testing.TB, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	return strings.Join(names, ",")
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// TestStdoutFloodCRI runs a container that writes to stdout as fast as it
// can and ignores write errors: the flood reaches the CRI log, the
// sandboxer's memory does not grow with it (the pipe to containerd applies
// back-pressure), and crictl stop ends it promptly.
func TestStdoutFloodCRI(t *testing.T) {
	e := testenv.NewEnv(t)
	const ref = "docker.io/kuasar/flood:test"
	importWasm(t, e, floodWasm, "flood.wasm", ref, false)
	podCfg := podJSON(t, e, "flood", nil)
	pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
	t.Cleanup(func() { e.CrictlErr("rmp", "-f", pod) })
	ctr := e.Crictl("create", pod, ctrJSON(t, e, "flood", ref, nil, false), podCfg)
	pid := e.Sandboxer.Pid()
	base := procStatusBytes(t, pid, "VmRSS")
	resetPeakRSS(t, pid)
	e.Crictl("start", ctr)

	// Wait until the flood has written floodBytes into the CRI log.
	const floodBytes = 64 << 20
	logPath := filepath.Join(e.Dir, "logs", "flood", "flood.log")
	begin := time.Now()
	deadline := begin.Add(120 * time.Second)
	var size int64
	for {
		if fi, err := os.Stat(logPath); err == nil {
			size = fi.Size()
		}
		if size >= floodBytes {
			break
		}
		if st, _ := containerState(e, ctr); st != "CONTAINER_RUNNING" {
			t.Fatalf("flood container is %s after %d bytes of log\nsandboxer log:\n%s", st, size, tail(e.Sandboxer.Output(), 30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("the flood wrote only %d bytes of log in 120 s", size)
		}
		time.Sleep(50 * time.Millisecond)
	}
	floodTook := time.Since(begin)

	stopStart := time.Now()
	e.Crictl("stop", "--timeout", "2", ctr)
	waitState(t, e, ctr, "CONTAINER_EXITED", 60*time.Second)
	stopTook := time.Since(stopStart)
	peak := procStatusBytes(t, pid, "VmHWM")
	t.Logf("flood: %d MiB of log in %s (%.0f MiB/s); stop took %s; sandboxer RSS %d MiB before, peak %d MiB",
		size>>20, floodTook.Round(time.Millisecond), float64(size)/(1<<20)/floodTook.Seconds(), stopTook.Round(time.Millisecond), base>>20, peak>>20)
	// crictl stop gives 2 s before SIGKILL; a loaded machine may add a few.
	if stopTook > 15*time.Second {
		t.Errorf("crictl stop of the flooding container took %s", stopTook)
	}
	// 64 MiB went through the sandboxer: a copy that buffered it would
	// show here; the bound leaves room for the runtime's own growth.
	if peak > base+32<<20 {
		t.Errorf("sandboxer RSS peaked at %d MiB during a %d MiB flood (base %d MiB): output is buffered without bound", peak>>20, size>>20, base>>20)
	}
	e.Crictl("rm", ctr)
	removePod(t, e, pod)
	checkNothingLeft(t, e)
}
