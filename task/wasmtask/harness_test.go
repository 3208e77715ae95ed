package wasmtask_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/fifo"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/task/wasmtask"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

const testNS = "kuasar-test"

// TestMain keeps the service's info logs out of test output unless
// KUASAR_TEST_DEBUG is set.
func TestMain(m *testing.M) {
	if os.Getenv("KUASAR_TEST_DEBUG") == "" {
		log.L.Logger.SetLevel(logrus.WarnLevel)
	}
	os.Exit(m.Run())
}

// recorder is a Publisher that keeps every event it is given.
type recorder struct {
	mu     sync.Mutex
	topics []string
	evs    []events.Event
	nss    []string
}

func (r *recorder) Publish(ctx context.Context, topic string, ev events.Event) error {
	ns, _ := namespaces.Namespace(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.topics = append(r.topics, topic)
	r.evs = append(r.evs, ev)
	r.nss = append(r.nss, ns)
	return nil
}

// waitTopics waits until the recorder saw want (in order, among the events
// of container id) or fails.
func (r *recorder) waitTopics(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		got := append([]string(nil), r.topics...)
		nss := append([]string(nil), r.nss...)
		r.mu.Unlock()
		if strings.Join(got, " ") == strings.Join(want, " ") {
			for i, ns := range nss {
				if ns != testNS {
					t.Fatalf("event %d (%s) has namespace %q, want %q", i, got[i], ns, testNS)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("events: got %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var (
	engineOnce sync.Once
	engine     wasm.Engine
	engineErr  error
)

func testEngine(t testing.TB) wasm.Engine {
	t.Helper()
	engineOnce.Do(func() { engine, engineErr = wazero.New(context.Background()) })
	if engineErr != nil {
		t.Fatal(engineErr)
	}
	return engine
}

// harness serves a Service over a real ttrpc connection on a unix socket.
type harness struct {
	svc    *wasmtask.Service
	client taskAPI.TTRPCTaskService
	events *recorder
	ctx    context.Context
	dir    string
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts rootfs like containerd does")
	}
}

func newHarness(t testing.TB, opts ...wasmtask.Option) *harness {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	rec := &recorder{}
	ctx := namespaces.WithNamespace(context.Background(), testNS)
	svc, err := wasmtask.New(ctx, append([]wasmtask.Option{
		wasmtask.WithEngine(testEngine(t)), wasmtask.WithPublisher(rec), wasmtask.WithSandbox("sb-test", testNS),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	taskAPI.RegisterTTRPCTaskService(srv, svc)
	sock := filepath.Join(dir, "task.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	tc := ttrpc.NewClient(conn)
	t.Cleanup(func() {
		tc.Close()
		srv.Close()
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := svc.Close(cctx); err != nil {
			t.Errorf("close service: %v", err)
		}
	})
	return &harness{svc: svc, client: taskAPI.NewTTRPCTaskClient(tc), events: rec, ctx: ctx, dir: dir}
}

// bundle is a container bundle on disk: config.json, an empty rootfs mount
// point, and a separate directory holding the image's files, bind-mounted
// onto the rootfs by Create.
type bundle struct {
	dir, src string
	rootfs   []*types.Mount
	stdout   *capture
	stderr   *capture
	stdin    string
	stdinW   io.WriteCloser
	req      *taskAPI.CreateTaskRequest
}

type bundleOpt func(*specs.Spec, *bundle)

func withStdin() bundleOpt { return func(_ *specs.Spec, b *bundle) { b.stdin = "stdin" } }
func withMemoryLimit(n int64) bundleOpt {
	return func(s *specs.Spec, _ *bundle) {
		s.Linux = &specs.Linux{Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &n}}}
	}
}

func (h *harness) bundle(t testing.TB, id string, args []string, files map[string][]byte, opts ...bundleOpt) *bundle {
	t.Helper()
	dir := filepath.Join(h.dir, id)
	src := filepath.Join(h.dir, id+"-image")
	for _, d := range []string{dir, src} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range files {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	spec := &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs", Readonly: true},
		Process: &specs.Process{Args: args, Env: []string{"PATH=/", "GREETING=hi"}, Cwd: "/"},
	}
	b := &bundle{dir: dir, src: src, rootfs: []*types.Mount{{Type: "bind", Source: src, Options: []string{"rbind", "ro"}}}}
	for _, o := range opts {
		o(spec, b)
	}
	data, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	b.stdout = newCapture(t, filepath.Join(h.dir, id+"-stdout"))
	b.stderr = newCapture(t, filepath.Join(h.dir, id+"-stderr"))
	b.req = &taskAPI.CreateTaskRequest{ID: id, Bundle: dir, Rootfs: b.rootfs, Stdout: b.stdout.path, Stderr: b.stderr.path}
	if b.stdin != "" {
		b.stdin = filepath.Join(h.dir, id+"-stdin")
		w, err := fifo.OpenFifo(context.Background(), b.stdin, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		b.stdinW = w
		b.req.Stdin = b.stdin
	}
	return b
}

// capture reads a FIFO as containerd's cio does, opened before Create.
type capture struct {
	path string
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
}

func newCapture(t testing.TB, path string) *capture {
	t.Helper()
	f, err := fifo.OpenFifo(context.Background(), path, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	c := &capture{path: path, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		b := make([]byte, 4096)
		for {
			n, err := f.Read(b)
			c.mu.Lock()
			c.buf.Write(b[:n])
			c.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { f.Close(); <-c.done })
	return c
}

// wait returns everything written once the writer closed the FIFO.
func (c *capture) wait(t testing.TB) string {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: writer never closed", c.path)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// mounted reports whether dir is a mount point.
func mounted(t testing.TB, dir string) bool {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	return len(ms) > 0
}

func ensureUnmounted(t testing.TB, b *bundle) {
	t.Helper()
	if p := filepath.Join(b.dir, "rootfs"); mounted(t, p) {
		unix.Unmount(p, unix.MNT_DETACH)
		t.Errorf("rootfs %s still mounted", p)
	}
}

var allTopics = []string{runtime.TaskCreateEventTopic, runtime.TaskStartEventTopic, runtime.TaskExitEventTopic, runtime.TaskDeleteEventTopic}

var _ = fixtures.Hello
