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
	"sync"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/fixtures"
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
// mount may be written (the host directory next to the mount is unchanged,
// nothing created next to the mount).
//
// A guest may not create a symlink with an absolute target (EPERM, as WASI
// asks), so the absolute link (there to /etc) is swapped by a host
// process writing in the shared directory, which the issue names as the
// other winner of the race; the guests swap relative links.
func TestRenameRaceAttackCRI(t *testing.T) {
	e := testenv.NewEnv(t)
	const ref = "docker.io/kuasar/race:test"
	importWasm(t, e, fixture(t, "race"), "race.wasm", ref, false)

	for i, tc := range []struct {
		name string
		// hostSwapper swaps from the host instead of container B.
		hostSwapper bool
		// linkTarget is the swapped symlink's target given the host
		// directory outside the mount (a sibling of the mount).
		linkTarget func(outside string) string
	}{
		{"guest swaps a link to the parent", false, func(outside string) string { return "../" + filepath.Base(outside) }},
		{"guest swaps a link through the host root", false, func(outside string) string {
			// From DIR/d: one ".." per component of the mount's host
			// path reaches the host root, then down to outside.
			return strings.Repeat("../", strings.Count(filepath.Dir(outside), "/")+1) + strings.TrimPrefix(outside, "/")
		}},
		{"host swaps an absolute link", true, func(outside string) string { return outside }},
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

			podName := fmt.Sprintf("race%d", i)
			podCfg := podJSON(t, e, podName, nil)
			pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
			t.Cleanup(func() { e.CrictlErr("rmp", "-f", pod) })
			mounts := []criMount{{ContainerPath: "/data", HostPath: shared}}
			reader := e.Crictl("create", pod, attackCtrJSON(t, e, podName+"-read", ref, attackCtr{
				args: []string{"read", "/data", fmt.Sprint(raceSeconds), fmt.Sprint(raceAttempts)}, mounts: mounts}), podCfg)
			var swapper string
			var stopHost func() int64
			if tc.hostSwapper {
				stopHost = hostSwap(t, shared, tc.linkTarget(outside))
			} else {
				// The swapper runs until stopped; the reader bounds the attack.
				swapper = e.Crictl("create", pod, attackCtrJSON(t, e, podName+"-swap", ref, attackCtr{
					args: []string{"swap", "/data", tc.linkTarget(outside), "3600"}, mounts: mounts}), podCfg)
				e.Crictl("start", swapper)
				waitLogLine(t, e, swapper, "ready", 60*time.Second)
			}
			attackStart := time.Now()
			e.Crictl("start", reader)
			summary := waitLogLine(t, e, reader, "attempts=", (raceSeconds+120)*time.Second)
			attackTook := time.Since(attackStart)
			if tc.hostSwapper {
				t.Logf("host swaps: %d", stopHost())
			} else {
				st, _ := containerState(e, swapper)
				if st != "CONTAINER_RUNNING" {
					t.Fatalf("the swapper is %s before the reader ended: the race did not run for the whole attack\nlogs:\n%s", st, crictlLogs(t, e, swapper))
				}
				e.Crictl("stop", "--timeout", "2", swapper)
				waitState(t, e, swapper, "CONTAINER_EXITED", 60*time.Second)
			}

			logs := crictlLogs(t, e, reader)
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
			// The creates that succeeded landed in the shared directory
			// (under either of the names the swapper left it at).
			if wrote > 0 {
				b1, err1 := os.ReadFile(filepath.Join(shared, "dir", "pwned"))
				b2, err2 := os.ReadFile(filepath.Join(shared, "d", "pwned"))
				if (err1 != nil || string(b1) != "pwned") && (err2 != nil || string(b2) != "pwned") {
					t.Errorf("%d creates succeeded but the shared directory holds no pwned file (%v, %v)", wrote, err1, err2)
				}
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
			if swapper != "" {
				e.Crictl("rm", swapper)
			}
			e.Crictl("rm", reader)
			removePod(t, e, pod)
		})
	}
	checkNothingLeft(t, e)
}

// hostSwap plays the swapper from the host, as any process writing in a
// shared directory can: it creates dir/DIR/shadow (the inside file) and
// dir/link -> target, then loops the same renames as the race fixture's
// swap mode until the returned function is called, which returns the
// number of swap rounds.
func hostSwap(t testing.TB, dir, target string) func() int64 {
	t.Helper()
	real, d, link := filepath.Join(dir, "dir"), filepath.Join(dir, "d"), filepath.Join(dir, "link")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(real, "shadow"), []byte(fixtures.RaceInside), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan int64)
	go func() {
		var n int64
		for {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			for range 64 {
				os.Rename(real, d)
				os.Rename(d, real)
				os.Rename(link, d)
				os.Rename(d, link)
			}
			n += 64
		}
	}()
	var once sync.Once
	var swaps int64
	stopFn := func() int64 {
		once.Do(func() { close(stop); swaps = <-done })
		return swaps
	}
	t.Cleanup(func() { stopFn() })
	return stopFn
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
	e.Crictl("stop", "--timeout", "30", ctr)
	st := waitState(t, e, ctr, "CONTAINER_EXITED", 60*time.Second)
	stopTook := time.Since(stopStart)
	peak := procStatusBytes(t, pid, "VmHWM")
	t.Logf("flood: %d MiB of log in %s (%.0f MiB/s); stop took %s; sandboxer RSS %d MiB before, peak %d MiB",
		size>>20, floodTook.Round(time.Millisecond), float64(size)/(1<<20)/floodTook.Seconds(), stopTook.Round(time.Millisecond), base>>20, peak>>20)
	// Promptly: the SIGTERM ended the flood (143), not the SIGKILL sent
	// after the 30 s grace period (137). The outcome tells, not a wall
	// time, which load stretches.
	if code, _ := st["exitCode"].(float64); code != 143 {
		t.Errorf("crictl stop of the flooding container: exit %v, want 143 (ended by the SIGTERM, no SIGKILL after the grace period): %v", code, st)
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

// openFileLimit is the soft RLIMIT_NOFILE of pid.
func openFileLimit(t testing.TB, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			var soft int
			if _, err := fmt.Sscan(rest, &soft); err != nil {
				t.Fatalf("/proc/%d/limits: %q: %v", pid, line, err)
			}
			return soft
		}
	}
	t.Fatalf("/proc/%d/limits has no Max open files", pid)
	return 0
}

// sandboxerOpenFiles is the RLIMIT_NOFILE TestFDBombCRI gives the sandboxer.
const sandboxerOpenFiles = 4096

// defaultOpenFiles is the per-container open-file limit a CRI container
// gets: containerd's CRI drops the OCI spec's rlimits, so the sandboxer's
// default (1,024) applies.
const defaultOpenFiles = 1024

// TestFDBombCRI runs pods whose containers open files until refused and hold
// them, next to another tenant. Each bomb must be refused with EMFILE at its
// container's limit (or ENFILE at the sandboxer's budget when many bombs
// together reach it, never EIO; a bomb started when the budget is spent may
// be refused, but not as OOMKilled), and while they hold their files
// another pod's runp, create, start and logs must work.
func TestFDBombCRI(t *testing.T) {
	// A known limit, whatever the machine's: 4,096 minus the sandboxer's
	// reserve is reached by a handful of bombs of 1,024 files.
	e := testenv.NewEnv(t, testenv.WithSandboxerOpenFiles(sandboxerOpenFiles))
	const bombRef, helloRef = "docker.io/kuasar/fdbomb:test", "docker.io/kuasar/hello-tenant:test"
	importWasm(t, e, fixture(t, "fdbomb"), "fdbomb.wasm", bombRef, false)
	importWasm(t, e, fixtures.Hello, "hello.wasm", helloRef, false)
	pid := e.Sandboxer.Pid()
	limit := openFileLimit(t, pid)
	if limit != sandboxerOpenFiles {
		t.Fatalf("the sandboxer's RLIMIT_NOFILE is %d, want %d (testenv.WithSandboxerOpenFiles)", limit, sandboxerOpenFiles)
	}
	if err := runTenant(t, e, "warm", helloRef); err != nil { // warm caches and pools
		t.Fatal(err)
	}
	baseFDs := fds(t, e)
	t.Logf("sandboxer: %d fds open, limit %d", baseFDs, limit)

	for _, tc := range []struct {
		name  string
		bombs int
	}{
		{"one bomb", 1},
		// Together more than the sandboxer's own limit: only its budget
		// (and reserve) stands between them and the other tenants.
		{"bombs beyond the sandboxer's limit", limit/defaultOpenFiles + 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			name := "fd-" + strings.ReplaceAll(tc.name, " ", "-")
			name = name[:min(len(name), 20)]
			podCfg := podJSON(t, e, name, nil)
			pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
			t.Cleanup(func() { e.CrictlErr("rmp", "-f", pod) })
			var ctrs []string
			for i := range tc.bombs {
				ctr := e.Crictl("create", pod, attackCtrJSON(t, e, fmt.Sprintf("%s-%d", name, i), bombRef, attackCtr{args: []string{"3600"}}), podCfg)
				ctrs = append(ctrs, ctr)
				// A bomb that starved the sandboxer fails here already.
				if _, err := e.CrictlErr("start", ctr); err != nil {
					t.Fatalf("start of bomb %d failed (earlier bombs starve the sandboxer?): %v\nsandboxer log:\n%s", i, err, tail(e.Sandboxer.Output(), 20))
				}
			}
			total := 0
			errnos := map[string]int{}
			var running []string
			for i, ctr := range ctrs {
				line, ok := logLineOrExit(t, e, ctr, "opened=", 120*time.Second)
				if !ok {
					// A bomb started after the budget was spent cannot
					// even open its mounts: its run is refused.
					status, _ := e.CrictlErr("inspect", "-o", "go-template", "--template", "exit {{.status.exitCode}} reason {{.status.reason}}", ctr)
					errnos["refused ("+status+")"]++
					if tc.bombs == 1 {
						t.Fatalf("the only bomb was refused before it ran (%s)\nsandboxer log:\n%s", status, tail(e.Sandboxer.Output(), 20))
					}
					// Refused files, not memory: OOMKilled would send
					// its owner raising a memory limit.
					if strings.Contains(status, "OOMKilled") {
						t.Errorf("bomb %d, refused for open files, is reported %s", i, status)
					}
					continue
				}
				running = append(running, ctr)
				kv := keyValues(line)
				n := int(intField(t, kv, "opened", line))
				total += n
				errnos[kv["errno"]]++
				if n > defaultOpenFiles {
					t.Errorf("bomb %d opened %d files, above the container limit %d", i, n, defaultOpenFiles)
				}
				switch {
				case tc.bombs == 1 && (kv["errno"] != "EMFILE" || n < defaultOpenFiles-64):
					t.Errorf("the bomb got %s after %d files, want EMFILE at about %d", kv["errno"], n, defaultOpenFiles)
				case kv["errno"] != "EMFILE" && kv["errno"] != "ENFILE":
					t.Errorf("bomb %d got %s after %d files, want EMFILE (its limit) or ENFILE (the sandboxer's budget)", i, kv["errno"], n)
				}
			}
			if total >= limit {
				t.Errorf("the bombs hold %d files, the sandboxer's whole limit %d", total, limit)
			}
			if tc.bombs > 1 && errnos["ENFILE"] == 0 && len(running) == len(ctrs) {
				t.Errorf("%d bombs held %d files and none met the sandboxer's budget (errnos %v): the test did not reach it", tc.bombs, total, errnos)
			}
			held := fds(t, e)
			t.Logf("%d bombs hold %d files (errnos %v); sandboxer fds %d -> %d of %d", tc.bombs, total, errnos, baseFDs, held, limit)

			// Another tenant, while the bombs hold their files.
			tenantStart := time.Now()
			if err := runTenant(t, e, name+"-t", helloRef); err != nil {
				t.Errorf("another tenant's pod failed while the fd bombs hold %d files: %v\nsandboxer log:\n%s", total, err, tail(e.Sandboxer.Output(), 20))
			} else {
				t.Logf("the other tenant's pod ran in %s", time.Since(tenantStart).Round(time.Millisecond))
			}
			for _, ctr := range running {
				if st, _ := containerState(e, ctr); st != "CONTAINER_RUNNING" {
					t.Errorf("bomb %s is %s while holding its files, want running", ctr, st)
				}
			}
			for _, ctr := range ctrs {
				e.Crictl("stop", "--timeout", "2", ctr)
				e.Crictl("rm", ctr)
			}
			removePod(t, e, pod)
			// The files are closed with the containers.
			deadline := time.Now().Add(30 * time.Second)
			for fds(t, e) > baseFDs+8 && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if got := fds(t, e); got > baseFDs+8 {
				t.Errorf("sandboxer keeps %d fds after the bombs were removed (%d before)", got, baseFDs)
			}
			t.Logf("%s took %s", tc.name, time.Since(start).Round(time.Millisecond))
		})
	}
	checkNothingLeft(t, e)
}

// defaultMemoryCap is [wasm] default_memory_limit's default.
const defaultMemoryCap = 512 << 20

// TestMemoryBombCRI runs a container that grows its memory until refused,
// next to a running neighbour pod. The bomb must be refused at its cap (its
// container's memory limit, else the default cap) with memory.grow failing
// in the guest, the sandboxer's resident memory must stay within 1.25 × the
// cap plus a fixed overhead, and the neighbour must keep running and a new
// pod must still start.
func TestMemoryBombCRI(t *testing.T) {
	e := testenv.NewEnv(t)
	const bombRef, wasiRef, helloRef = "docker.io/kuasar/membomb:test", "docker.io/kuasar/wasi-neighbour:test", "docker.io/kuasar/hello-tenant:test"
	importWasm(t, e, fixture(t, "membomb"), "membomb.wasm", bombRef, false)
	importWasm(t, e, fixtures.WASI, "wasi.wasm", wasiRef, false)
	importWasm(t, e, fixtures.Hello, "hello.wasm", helloRef, false)

	nbCfg := podJSON(t, e, "neighbour", nil)
	nbPod := e.Crictl("runp", "--runtime", "kuasar", nbCfg)
	t.Cleanup(func() { e.CrictlErr("rmp", "-f", nbPod) })
	nb := e.Crictl("create", nbPod, ctrJSON(t, e, "neighbour", wasiRef, []string{"sleep", "3600"}, false), nbCfg)
	e.Crictl("start", nb)
	waitState(t, e, nb, "CONTAINER_RUNNING", 30*time.Second)
	pid := e.Sandboxer.Pid()

	// Host memory allowed beyond 1.25 × the cap: the compiled module, the
	// runtime's heap growth and CRI's calls.
	const overhead = 32 << 20
	for _, tc := range []struct {
		name     string
		memLimit int64 // the container's memory limit, 0 for none
		cap      int64 // where the guest must be refused
		long     bool  // skipped with -short
	}{
		{"container limit 64Mi", 64 << 20, 64 << 20, false},
		{"default cap", 0, defaultMemoryCap, true},
		{"container limit above the default", 768 << 20, 768 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.long && testing.Short() {
				t.Skipf("-short: the bomb commits %d MiB", tc.cap>>20)
			}
			start := time.Now()
			name := fmt.Sprintf("mem-%d", tc.memLimit>>20)
			podCfg := podJSON(t, e, name, nil)
			pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
			t.Cleanup(func() { e.CrictlErr("rmp", "-f", pod) })
			ctr := e.Crictl("create", pod, attackCtrJSON(t, e, name, bombRef, attackCtr{memLimit: tc.memLimit}), podCfg)
			base := procStatusBytes(t, pid, "VmRSS")
			resetPeakRSS(t, pid)
			e.Crictl("start", ctr)
			st := waitState(t, e, ctr, "CONTAINER_EXITED", 180*time.Second)
			peak := procStatusBytes(t, pid, "VmHWM")
			logs := ctrLogs(t, e, ctr)
			line, _ := findLine(logs, "reached=")
			code, _ := st["exitCode"].(float64)
			t.Logf("%s: %q exit %v reason %v; sandboxer RSS %d MiB before, peak %d MiB (bound %d MiB); %s",
				tc.name, line, code, st["reason"], base>>20, peak>>20, (base+uint64(tc.cap)*5/4+overhead)>>20, time.Since(start).Round(time.Millisecond))
			if line == "" {
				t.Fatalf("the bomb printed no reached= line (exit %v, reason %v): it was not refused by memory.grow\nlogs:\n%s\nsandboxer log:\n%s", code, st["reason"], tail(logs, 10), tail(e.Sandboxer.Output(), 20))
			}
			reached := intField(t, keyValues(line), "reached", line)
			// membomb grows 1 MiB at a time: refused within 1 MiB of the cap.
			if reached > tc.cap || reached < tc.cap-(1<<20) {
				t.Errorf("the bomb reached %d MiB (%d bytes), want refusal at its cap of %d MiB", reached>>20, reached, tc.cap>>20)
			}
			checkOOM(t, e, ctr, st)
			if peak > base+uint64(tc.cap)*5/4+overhead {
				t.Errorf("sandboxer RSS peaked at %d MiB for a %d MiB cap (base %d MiB): more than 1.25 × the cap + %d MiB", peak>>20, tc.cap>>20, base>>20, overhead>>20)
			}
			if s, _ := containerState(e, nb); s != "CONTAINER_RUNNING" {
				t.Fatalf("the neighbour is %s after the bomb, want running\nsandboxer log:\n%s", s, tail(e.Sandboxer.Output(), 20))
			}
			if err := runTenant(t, e, name+"-t", helloRef); err != nil {
				t.Errorf("a new pod failed after the memory bomb: %v", err)
			}
			e.Crictl("rm", ctr)
			removePod(t, e, pod)
		})
	}
	// A pod's memory limit bounds the sum of its containers: a first bomb
	// holds part of it, a second is refused at what is left.
	t.Run("pod limit bounds the sum", func(t *testing.T) {
		start := time.Now()
		const podLimit, first = 96 << 20, 48 << 20
		podCfg := podJSONMemory(t, e, "mem-pod", podLimit)
		pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
		t.Cleanup(func() { e.CrictlErr("rmp", "-f", pod) })
		holder := e.Crictl("create", pod, attackCtrJSON(t, e, "mem-holder", bombRef, attackCtr{args: []string{fmt.Sprint(first >> 20), "3600"}}), podCfg)
		bomb := e.Crictl("create", pod, attackCtrJSON(t, e, "mem-bomb", bombRef, attackCtr{}), podCfg)
		e.Crictl("start", holder)
		line := waitLogLine(t, e, holder, "reached=", 120*time.Second)
		held := intField(t, keyValues(line), "reached", line)
		e.Crictl("start", bomb)
		st := waitState(t, e, bomb, "CONTAINER_EXITED", 120*time.Second)
		logs := crictlLogs(t, e, bomb)
		bline, ok := findLine(logs, "reached=")
		if !ok {
			t.Fatalf("the second bomb printed no reached= line (exit %v, reason %v)\nlogs:\n%s", st["exitCode"], st["reason"], tail(logs, 10))
		}
		reached := intField(t, keyValues(bline), "reached", bline)
		t.Logf("pod limit %d MiB: holder %d MiB, bomb refused at %d MiB, exit %v reason %v; %s",
			podLimit>>20, held>>20, reached>>20, st["exitCode"], st["reason"], time.Since(start).Round(time.Millisecond))
		if held+reached > podLimit || held+reached < podLimit-(2<<20) {
			t.Errorf("holder %d + bomb %d bytes = %d MiB, want refusal within 2 MiB below the pod limit %d MiB", held, reached, (held+reached)>>20, podLimit>>20)
		}
		checkOOM(t, e, bomb, st)
		if s, _ := containerState(e, holder); s != "CONTAINER_RUNNING" {
			t.Errorf("the holder is %s after its pod mate's bomb, want running", s)
		}
		e.Crictl("stop", "--timeout", "2", holder)
		e.Crictl("rm", holder)
		e.Crictl("rm", bomb)
		removePod(t, e, pod)
	})
	e.Crictl("stop", "--timeout", "2", nb)
	e.Crictl("rm", nb)
	removePod(t, e, nbPod)
	checkNothingLeft(t, e)
}

// checkOOM checks how CRI reports a bomb refused by memory.grow: the guest
// saw the refusal and exited by itself with membomb's code (ENOMEM), and the
// sandboxer's TaskOOM event made CRI give the reason OOMKilled. CRI handles
// OOM events on their own goroutine, so the exit may show first with reason
// Error: poll until the reason settles.
func checkOOM(t testing.TB, e *testenv.Env, ctr string, st map[string]any) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for st["reason"] != "OOMKilled" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		st = waitState(t, e, ctr, "CONTAINER_EXITED", 10*time.Second)
	}
	if code, _ := st["exitCode"].(float64); code != fixtures.MemBombRefusedExit || st["reason"] != "OOMKilled" {
		t.Errorf("the bomb exited %v with reason %v, want %d (memory.grow refused in the guest) and OOMKilled", st["exitCode"], st["reason"], fixtures.MemBombRefusedExit)
	}
}
