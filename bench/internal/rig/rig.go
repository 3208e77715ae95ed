// Package rig starts, for the benchmark harness, the real peers its
// scenarios measure: kuasar-sandboxer on private sockets, containerd with
// the kuasar and runc runtime handlers, runc bundles, and it finds the
// tools `make deps` installs. Everything lives under a directory the caller
// owns; Close stops what was started.
package rig

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// Versions of the tools `make deps` (.ci/deps.sh) installs.
const (
	ContainerdVersion = "v2.4.2"
	CrictlVersion     = "v1.37.0"
	// WazeroVersion is wazero's CLI, the fresh-process-per-task baseline:
	// the version go.mod requires, so that both sides run the same engine.
	WazeroVersion = "v1.12.0"
)

// ToolsDir is $KUASAR_TOOLS or ~/.cache/kuasar-tools, where make deps puts
// containerd, crictl and wazero.
func ToolsDir() string {
	if d := os.Getenv("KUASAR_TOOLS"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "kuasar-tools")
}

// Tool returns the path of a tool make deps installs, or an error saying
// how to install it.
func Tool(name string) (string, error) {
	d := ToolsDir()
	var p string
	switch name {
	case "containerd", "ctr", "containerd-shim-runc-v2":
		p = filepath.Join(d, "containerd-"+ContainerdVersion, name)
	case "crictl":
		p = filepath.Join(d, "crictl-"+CrictlVersion, name)
	case "wazero":
		p = filepath.Join(d, "wazero-"+WazeroVersion, name)
	default:
		lp, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("%s is not installed: run make deps: %w", name, errdefs.ErrNotFound)
		}
		return lp, nil
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s is missing: run make deps (or set KUASAR_TOOLS): %w", p, errdefs.ErrNotFound)
	}
	return p, nil
}

// Binary finds one of this repository's binaries (kuasar-sandboxer,
// containerd-shim-kuasar-v1): next to the kuasar executable (make build's
// bin/), else on $PATH, else in ./bin.
func Binary(kuasarExe, name string) (string, error) {
	cands := []string{filepath.Join(filepath.Dir(kuasarExe), name)}
	if p, err := exec.LookPath(name); err == nil {
		cands = append(cands, p)
	}
	cands = append(cands, filepath.Join("bin", name))
	for _, c := range cands {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return filepath.Abs(c)
		}
	}
	return "", fmt.Errorf("%s is neither next to %s, on $PATH nor in ./bin: run make build: %w", name, kuasarExe, errdefs.ErrNotFound)
}

// Process is a daemon the rig started, its output kept for error messages.
type Process struct {
	Cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

// Write appends to the process's log.
func (p *Process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.out.Len() > 1<<20 {
		p.out.Reset() // keep the tail bounded for long runs
	}
	return p.out.Write(b)
}

// Output returns what the process printed (the last MiB).
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Pid is the process's pid.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Start runs bin with args, env added to ours, in its own process group
// (the harness kills the group, then every descendant, at its end).
func Start(env []string, bin string, args ...string) (*Process, error) {
	cmd := exec.Command(bin, args...)
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p, p
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

// Stop sends SIGTERM to the process group and waits up to grace before
// SIGKILL. Idempotent.
func (p *Process) Stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(-p.Pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		syscall.Kill(-p.Pid(), syscall.SIGKILL)
		<-p.done
	}
}

// WaitSocket polls until the unix socket at path accepts a connection, the
// process exits, ctx ends or timeout passes.
func WaitSocket(ctx context.Context, path string, timeout time.Duration, p *Process) error {
	deadline := time.Now().Add(timeout)
	for {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before serving %s: %s", filepath.Base(p.Cmd.Path), path, tail(p.Output()))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond): // polling interval
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not serve %s after %v: %w\n%s", filepath.Base(p.Cmd.Path), path, timeout, context.DeadlineExceeded, tail(p.Output()))
		}
	}
}

func tail(s string) string {
	if len(s) > 2000 {
		return "..." + s[len(s)-2000:]
	}
	return s
}

// FDs is the number of open file descriptors of pid.
func FDs(pid int) (int, error) {
	e, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	return len(e), err
}
