// Package testenv runs the real peers kuasar-go's integration tests need: a
// containerd v2.4.2 with a temporary configuration and directories, ctr and
// crictl bound to it, this repository's binaries built once per test binary,
// kuasar-sandboxer as a child process, and images imported into containerd.
//
// Tools are found under $KUASAR_TOOLS (default $HOME/.cache/kuasar-tools),
// where `make deps` installs them. A missing tool fails the test with a
// message saying to run `make deps`; tests skip only when not run as root.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/kuasar-go/kuasar/internal/procfs"
)

// Versions of the peers the tests run against.
const (
	ContainerdVersion = "v2.4.2"
	CrictlVersion     = "v1.37.0"
)

// Tools are the paths of the external binaries.
type Tools struct {
	Containerd, Ctr, Crictl string
	// RuncShim is containerd-shim-runc-v2, for the runc baseline.
	RuncShim string
}

// RequireRoot skips t unless it runs as root (containerd, mounts and netns
// need it).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("integration test needs root (containerd, mounts)")
	}
}

// ToolsDir is $KUASAR_TOOLS or $HOME/.cache/kuasar-tools.
func ToolsDir() string {
	if d := os.Getenv("KUASAR_TOOLS"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "kuasar-tools")
}

// FindTools returns the tool paths, failing t when one is missing. Under
// -short (make test-short: unit tests only) it skips t instead: every
// caller goes on to run containerd or crictl.
func FindTools(t testing.TB) Tools {
	t.Helper()
	if testing.Short() {
		t.Skip("runs containerd and crictl; -short runs unit tests only")
	}
	d := ToolsDir()
	tl := Tools{
		Containerd: filepath.Join(d, "containerd-"+ContainerdVersion, "containerd"),
		Ctr:        filepath.Join(d, "containerd-"+ContainerdVersion, "ctr"),
		Crictl:     filepath.Join(d, "crictl-"+CrictlVersion, "crictl"),
	}
	for _, p := range []string{
		filepath.Join(d, "containerd-shim-runc-v2-"+ContainerdVersion, "containerd-shim-runc-v2"),
		filepath.Join(d, "containerd-"+ContainerdVersion, "containerd-shim-runc-v2"),
	} {
		if _, err := os.Stat(p); err == nil {
			tl.RuncShim = p
			break
		}
	}
	for _, p := range []string{tl.Containerd, tl.Ctr, tl.Crictl} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s is missing: run make deps (or set KUASAR_TOOLS): %v", p, err)
		}
	}
	return tl
}

// TempDir returns a short temporary directory (unix socket paths must stay
// under 108 bytes), removed when t ends.
func TempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "kt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Unmount anything a failed test left under d before removing it.
		unmountUnder(d)
		os.RemoveAll(d)
	})
	return d
}

func unmountUnder(dir string) {
	mps := MountsUnder(dir)
	for i := len(mps) - 1; i >= 0; i-- {
		syscall.Unmount(mps[i], syscall.MNT_DETACH)
	}
}

// MountsUnder lists the mount points under dir (for leak checks), in
// mount order.
func MountsUnder(dir string) []string {
	ms, _ := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return !strings.HasPrefix(m.Mountpoint, dir+"/"), false
	})
	var mps []string
	for _, m := range ms {
		mps = append(mps, m.Mountpoint)
	}
	return mps
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// RepoRoot is the repository's root directory (where go.mod is).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

// Binaries builds kuasar-sandboxer and containerd-shim-kuasar-v1 once per
// test binary and returns the directory holding them. $KUASAR_TEST_BIN,
// when set, names a directory holding them already built (`make
// test-wasmedge` passes the -tags wasmedge build of `make wasmedge`).
func Binaries(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("KUASAR_TEST_BIN"); d != "" {
		return d
	}
	buildOnce.Do(func() {
		removeStaleBinaries()
		buildDir, buildErr = os.MkdirTemp("", binPrefix)
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", buildDir+"/", "./cmd/kuasar-sandboxer", "./cmd/containerd-shim-kuasar-v1")
		cmd.Dir = RepoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

// binPrefix names the per-test-binary build directories.
const binPrefix = "kuasar-testenv-bin"

// removeStaleBinaries deletes build directories a test binary that did not
// use Main left behind more than an hour ago.
func removeStaleBinaries() {
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), binPrefix+"*"))
	for _, d := range old {
		if fi, err := os.Stat(d); err == nil && time.Since(fi.ModTime()) > time.Hour {
			os.RemoveAll(d)
		}
	}
}

// CleanupBinaries removes the built binaries; Main calls it.
func CleanupBinaries() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// Main runs the tests of a package that uses Binaries and removes the
// binaries afterwards. Use it as: func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	CleanupBinaries()
	os.Exit(code)
}

// Process is a child process the test started.
type Process struct {
	Cmd *exec.Cmd
	Log *bytes.Buffer
	mu  *sync.Mutex
}

// Pid is the process's pid.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Output returns what the process logged so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.Log.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

// Write appends p to the buffer under the process's lock.
func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// Start runs bin with args and env additions, logging into a buffer. The
// process is killed (SIGTERM, then SIGKILL) when t ends.
func Start(t testing.TB, env []string, bin string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	p := &Process{Cmd: cmd, Log: &bytes.Buffer{}, mu: &sync.Mutex{}}
	cmd.Stdout = lockedWriter{p.mu, p.Log}
	cmd.Stderr = cmd.Stdout
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	return p
}

// Stop sends SIGTERM and waits up to grace before SIGKILL. Idempotent.
func (p *Process) Stop(grace time.Duration) {
	if p.Cmd.ProcessState != nil {
		return
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.Cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		p.Cmd.Process.Kill()
		<-done
	}
}

// Kill9 kills the process with SIGKILL and reaps it.
func (p *Process) Kill9() {
	if p.Cmd.ProcessState != nil {
		return
	}
	p.Cmd.Process.Kill()
	p.Cmd.Wait()
}

// WaitSocket waits until a unix socket at path accepts connections.
func WaitSocket(t testing.TB, path string, timeout time.Duration, p *Process) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
		if p != nil && p.Cmd.ProcessState != nil {
			t.Fatalf("%s exited: %s", p.Cmd.Path, p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	out := ""
	if p != nil {
		out = p.Output()
	}
	t.Fatalf("socket %s not ready after %s\n%s", path, timeout, out)
}

// FDCount is the number of open file descriptors of pid.
func FDCount(pid int) (int, error) {
	e, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	return len(e), err
}

// RSSBytes is the resident set size of pid.
func RSSBytes(pid int) (uint64, error) { return procfs.RSSBytes(pid) }

// Run runs a command and returns its combined output, failing t on error.
func Run(t testing.TB, ctx context.Context, bin string, args ...string) string {
	t.Helper()
	out, err := RunErr(ctx, bin, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return out
}

// RunErr runs a command and returns its standard output; on failure the
// error carries its standard error.
func RunErr(ctx context.Context, bin string, args ...string) (string, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, lastLines(stderr.String(), 8))
	}
	return stdout.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
