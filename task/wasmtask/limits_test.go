package wasmtask_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/runtime"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/procfs"
	"github.com/kuasar-go/kuasar/task/wasmtask"
)

// output polls c until it holds want, or fails after a deadline.
func (c *capture) output(t testing.TB, want string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.mu.Lock()
		s := c.buf.String()
		c.mu.Unlock()
		if strings.Contains(s, want) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q never came (have %q)", c.path, want, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reachedBytes parses membomb's "reached=BYTES".
func reachedBytes(t testing.TB, out string) uint64 {
	t.Helper()
	v, _ := strings.CutPrefix(strings.TrimSpace(out), "reached=")
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("membomb printed %q", out)
	}
	return n
}

// oomFor reports whether a TaskOOM event for container id was published.
// oomAfter waits (10 s deadline, polled) until id has at least one TaskOOM
// event and returns its count: events reach the publisher through an
// asynchronous queue, so the task's exit can be seen before its OOM event.
func (r *recorder) oomAfter(id string) int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n := r.oomFor(id); n > 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

func (r *recorder) oomFor(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for i, topic := range r.topics {
		if ev, ok := r.evs[i].(*eventstypes.TaskOOM); ok && topic == runtime.TaskOOMEventTopic && ev.ContainerID == id {
			n++
		}
	}
	return n
}

func (h *harness) startTask(t *testing.T, b *bundle) {
	t.Helper()
	r(h.client.Create(h.ctx, b.req)).get(t)
	r(h.client.Start(h.ctx, &taskAPI.StartRequest{ID: b.req.ID})).get(t)
}

func (h *harness) waitTask(t *testing.T, id string) uint32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, time.Minute)
	defer cancel()
	return r(h.client.Wait(ctx, &taskAPI.WaitRequest{ID: id})).get(t).ExitStatus
}

// TestMemoryBombBoundedByDefault: a container with no memory limit in a pod
// with none is bounded by the default limit; its refused grow publishes
// TaskOOM (CRI: OOMKilled) for it alone, and the service keeps running other
// containers.
func TestMemoryBombBoundedByDefault(t *testing.T) {
	const def = 64 << 20
	h := newHarness(t, wasmtask.WithDefaultMemoryLimit(def))
	files := map[string][]byte{"membomb.wasm": fixtures.MemBomb, "hello.wasm": fixtures.Hello}
	b := h.bundle(t, "bomb", []string{"/membomb.wasm"}, files)
	h.startTask(t, b)
	if code := h.waitTask(t, "bomb"); code != fixtures.MemBombRefusedExit {
		t.Fatalf("bomb exited %d; want %d (grow refused)", code, fixtures.MemBombRefusedExit)
	}
	if got := reachedBytes(t, b.stdout.wait(t)); got > def || got+1<<20 <= def {
		t.Errorf("bomb reached %d bytes; want within 1 MiB under the default %d", got, def)
	}
	if n := h.events.oomAfter("bomb"); n != 1 {
		t.Errorf("%d TaskOOM events for the bomb; want 1", n)
	}
	hello := h.bundle(t, "hello", []string{"/hello.wasm"}, files)
	h.startTask(t, hello)
	if code := h.waitTask(t, "hello"); code != 0 || !strings.Contains(hello.stdout.wait(t), fixtures.HelloGreeting) {
		t.Errorf("a container after the bomb: exit %d", code)
	}
	if n := h.events.oomFor("hello"); n != 0 {
		t.Errorf("%d TaskOOM events for hello", n)
	}
}

// TestPodMemoryBudgetShared: the pod's memory limit bounds the sum of its
// containers' memories: next to a container holding 48 MiB of a 96 MiB pod,
// a bomb (no limit of its own) is refused at the 48 MiB left, and the budget
// is whole again once both ended.
func TestPodMemoryBudgetShared(t *testing.T) {
	const pod = 96 << 20
	h := newHarness(t, wasmtask.WithMemoryLimit(pod), wasmtask.WithDefaultMemoryLimit(512<<20))
	files := map[string][]byte{"membomb.wasm": fixtures.MemBomb}
	holder := h.bundle(t, "holder", []string{"/membomb.wasm", "48", "600"}, files)
	h.startTask(t, holder)
	held := reachedBytes(t, holder.stdout.output(t, "\n"))
	bomb := h.bundle(t, "bomb", []string{"/membomb.wasm"}, files)
	h.startTask(t, bomb)
	if code := h.waitTask(t, "bomb"); code != fixtures.MemBombRefusedExit {
		t.Fatalf("bomb exited %d; want %d", code, fixtures.MemBombRefusedExit)
	}
	got := reachedBytes(t, bomb.stdout.wait(t))
	if got+held > pod || got+held+1<<20 <= pod {
		t.Errorf("bomb reached %d bytes next to %d held: want the sum within 1 MiB under the pod's %d", got, held, pod)
	}
	if h.events.oomAfter("bomb") != 1 || h.events.oomFor("holder") != 0 {
		t.Errorf("TaskOOM events: bomb %d, holder %d; want 1 and 0", h.events.oomFor("bomb"), h.events.oomFor("holder"))
	}
	r(h.client.Kill(h.ctx, &taskAPI.KillRequest{ID: "holder", Signal: uint32(syscall.SIGKILL)})).get(t)
	if code := h.waitTask(t, "holder"); code != 137 {
		t.Errorf("holder exited %d after SIGKILL", code)
	}
	if u := h.svc.Usage(); u.MemoryBytes != 0 {
		t.Errorf("usage %d bytes after every instance ended", u.MemoryBytes)
	}
}

// TestStdoutFloodKill: a guest writing endlessly to a stdout FIFO nobody
// reads blocks, takes no memory for it, and is still killed at once.
func TestStdoutFloodKill(t *testing.T) {
	h := newHarness(t)
	b := h.bundle(t, "flood", []string{"/wasi.wasm", "cat"}, map[string][]byte{"wasi.wasm": fixtures.WASI}, withStdin())
	// A stdout FIFO that is open for reading (as containerd holds it) but
	// never read.
	silent := b.req.Stdout + "-silent"
	if err := unix.Mkfifo(silent, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(silent, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b.req.Stdout = silent
	// Endless input for cat.
	feedCtx, stopFeed := context.WithCancel(context.Background())
	defer stopFeed()
	go func() {
		chunk := make([]byte, 64<<10)
		for feedCtx.Err() == nil {
			if _, err := b.stdinW.Write(chunk); err != nil && !os.IsTimeout(err) {
				time.Sleep(time.Millisecond) // full (EAGAIN): the guest is blocked
			}
		}
	}()
	before, _ := procfs.RSSBytes(0)
	h.startTask(t, b)
	// Wait until the guest has filled the FIFO and blocks in its write.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := ioctlFIONREAD(f, &n); err == nil && n >= 64<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the guest never filled its stdout FIFO")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r(h.client.Kill(h.ctx, &taskAPI.KillRequest{ID: "flood", Signal: uint32(syscall.SIGKILL)})).get(t)
	if code := h.waitTask(t, "flood"); code != 137 {
		t.Errorf("flood exited %d after SIGKILL; want 137", code)
	}
	after, _ := procfs.RSSBytes(0)
	if after > before+64<<20 {
		t.Errorf("RSS grew from %d to %d MiB while the guest flooded its stdout", before>>20, after>>20)
	}
}

// ioctlFIONREAD reads how many bytes wait in the FIFO f.
func ioctlFIONREAD(f *os.File, n *int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		v, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ) // FIONREAD
		*n, ierr = v, err
	}); err != nil {
		return err
	}
	return ierr
}

// TestOpenFileLimitFromSpec: a container's RLIMIT_NOFILE (process.rlimits)
// is its open-file limit, else the service's default; the guest gets
// EMFILE there, counting stdio and its rootfs as Linux counts fds.
func TestOpenFileLimitFromSpec(t *testing.T) {
	h := newHarness(t, wasmtask.WithDefaultOpenFileLimit(100))
	files := map[string][]byte{"fdbomb.wasm": fixtures.FdBomb}
	for _, tc := range []struct {
		name string
		opts []bundleOpt
		want string
	}{
		{"default", nil, "opened=96 errno=EMFILE"},
		{"rlimit", []bundleOpt{func(s *specs.Spec, _ *bundle) {
			s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 64, Hard: 4096}}
		}}, "opened=60 errno=EMFILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := h.bundle(t, "fd-"+tc.name, []string{"/fdbomb.wasm", "0", "/"}, files, tc.opts...)
			h.startTask(t, b)
			if code := h.waitTask(t, b.req.ID); code != 0 {
				t.Fatalf("exit %d", code)
			}
			if got := strings.TrimSpace(b.stdout.wait(t)); got != tc.want {
				t.Errorf("fdbomb: %q; want %q", got, tc.want)
			}
		})
	}
}
