package sandboxer_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// Per idle Wasm sandbox (a started sandbox whose one task runs a module
// that waits: blocked reading its stdin FIFO, or asleep in poll_oneoff;
// containerd's connection to its Task API closed), at most:
const (
	// maxIdleGoroutines: the guest's own goroutine (parked in Go's
	// poller in its fd_read, or on its timer in poll_oneoff) and
	// wazero's watcher of the run's context. The Task API socket (one
	// accept loop serves every sandbox's), the exit watchers, the event
	// queue and the stdin FIFO park no goroutine of their own.
	maxIdleGoroutines = 2
	// maxIdleThreads: no OS thread is held by an idle guest. The Go
	// runtime keeps the threads it started for blocking syscalls during
	// the starts (more under load) and never ends them: the bound allows
	// idleSandboxes/2 of those, half of what a thread per guest makes.
	maxIdleThreads = 0
)

// idleSandboxes is how many idle sandboxes TestIdleSandboxCost starts after
// its warm-up one: enough that one-time costs (a pool, a timer, a cache
// entry) round away, few enough for any machine.
const idleSandboxes = 50

// TestIdleSandboxCost starts idle Wasm sandboxes through the sandboxer's
// Sandbox and Task APIs, as containerd does, and counts what each one holds
// in this process while it idles: goroutines, OS threads and open files.
// Counts, not times: a regression that parks a goroutine or holds an fd per
// sandbox fails it on any machine. kuasar bench density measures the
// memory the same sandboxes take.
func TestIdleSandboxCost(t *testing.T) {
	tests := []struct {
		name string
		args []string // the module's arguments
		// stdin: the task has a stdin FIFO, held open for writing.
		stdin bool
		// maxFDs: the sandbox's Task API listening socket, and the
		// task's stdin FIFO when it has one. The task's rootfs (the
		// guest's preopened "/") is opened at the guest's first use.
		maxFDs int
	}{
		{"stdin", []string{"/wasi.wasm", "idle"}, true, 2},
		{"sleep", []string{"/wasi.wasm", "sleep", "100000"}, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { idleSandboxCost(t, tt.args, tt.stdin, tt.maxFDs) })
	}
}

func idleSandboxCost(t *testing.T, args []string, withStdin bool, maxIdleFDs int) {
	r := newRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ctx = namespaces.WithNamespace(ctx, "idle")
	var writers []*os.File
	t.Cleanup(func() {
		for _, w := range writers {
			w.Close()
		}
	})
	startIdle := func(i int) {
		t.Helper()
		id := fmt.Sprintf("idle%d", i)
		req := r.bundle(t, id, args)
		if withStdin {
			stdin := filepath.Join(req.Bundle, "stdin")
			if err := syscall.Mkfifo(stdin, 0o600); err != nil {
				t.Fatal(err)
			}
			// Held open for writing, as containerd holds a task's stdin
			// FIFO, so that the guest blocks instead of reading EOF.
			w, err := os.OpenFile(stdin, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			writers = append(writers, w)
			req.Stdin = stdin
		}
		if _, err := r.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: id}); err != nil {
			t.Fatal(err)
		}
		st, err := r.client.Start(ctx, &api.ControllerStartRequest{SandboxID: id})
		if err != nil {
			t.Fatal(err)
		}
		tasks, closeFn, err := taskClient(st.Address)
		if err != nil {
			t.Fatal(err)
		}
		defer closeFn()
		if _, err := tasks.Create(ctx, req); err != nil {
			t.Fatalf("task create %s: %v", id, err)
		}
		if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: id}); err != nil {
			t.Fatalf("task start %s: %v", id, err)
		}
	}
	startIdle(0) // one-time costs are the daemon's
	type counts struct{ goroutines, threads, fds int }
	measure := func() counts {
		fds, _ := os.ReadDir("/proc/self/fd")
		tasks, _ := os.ReadDir("/proc/self/task")
		// The test's own FIFO write ends are not the sandboxer's.
		return counts{runtime.NumGoroutine(), len(tasks), len(fds) - len(writers)}
	}
	base := measure()
	for i := 1; i <= idleSandboxes; i++ {
		startIdle(i)
	}
	within := func(c counts) bool {
		return c.goroutines-base.goroutines <= maxIdleGoroutines*idleSandboxes &&
			c.threads-base.threads <= maxIdleThreads*idleSandboxes+idleSandboxes/2 &&
			c.fds-base.fds <= maxIdleFDs*idleSandboxes
	}
	// Closed connections' goroutines end soon after the close: poll with
	// a deadline for the counts to come down to the bound.
	var c counts
	for deadline := time.Now().Add(time.Minute); ; {
		c = measure()
		if within(c) || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(50 * time.Millisecond): // polling interval
		}
	}
	per := func(n, b int) float64 { return float64(n-b) / idleSandboxes }
	t.Logf("per idle sandbox: %.2f goroutines, %.2f threads, %.2f fds",
		per(c.goroutines, base.goroutines), per(c.threads, base.threads), per(c.fds, base.fds))
	if !within(c) {
		var b strings.Builder
		pprof.Lookup("goroutine").WriteTo(&b, 1)
		fds, _ := os.ReadDir("/proc/self/fd")
		for _, e := range fds {
			l, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
			fmt.Fprintf(&b, "fd %s -> %s\n", e.Name(), l)
		}
		t.Errorf("%d idle sandboxes hold %.2f goroutines (at most %d), %.2f OS threads (at most %d) and %.2f fds (at most %d) each:\n%s",
			idleSandboxes, per(c.goroutines, base.goroutines), maxIdleGoroutines, per(c.threads, base.threads), maxIdleThreads,
			per(c.fds, base.fds), maxIdleFDs, b.String())
	}
}
