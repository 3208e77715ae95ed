package sandboxer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cg2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kuasar-go/kuasar/sandboxer/config"
)

// harness runs a Service behind a real gRPC server on a unix socket.
type harness struct {
	t      *testing.T
	dir    string
	svc    *Service
	gs     *grpc.Server
	client api.ControllerClient
	conn   *grpc.ClientConn
	wasm   *fakeBackend
	vm     *fakeBackend
	// state is the state directory; "" means <dir>/state.
	state string
	// vmRecoverLive makes the vm backend of the next restart re-attach
	// its sandboxes live.
	vmRecoverLive bool
	// vmWaitGate is the vm backend's waitGate at the next restart.
	vmWaitGate chan struct{}
}

// shortTempDir keeps socket paths under the unix limit.
func shortTempDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "ks")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func newHarness(t *testing.T, dir string) *harness {
	t.Helper()
	if dir == "" {
		dir = shortTempDir(t)
	}
	h := &harness{t: t, dir: dir, wasm: &fakeBackend{name: "wasm"}, vm: &fakeBackend{name: "vm"}}
	h.start()
	return h
}

func (h *harness) start() {
	t := h.t
	cfg, err := config.Parse([]byte("[sandboxer]\ndefault_isolation = \"wasm\"\n[runtime_handlers.kuasar-vm]\nisolation = \"vm\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	state := h.state
	if state == "" {
		state = filepath.Join(h.dir, "state")
	}
	svc, err := New(context.Background(), WithConfig(cfg), WithStateDir(state),
		WithBackend(h.wasm), WithBackend(h.vm))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(h.dir, "sb.sock")
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	svc.Register(gs)
	go gs.Serve(l)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	h.svc, h.gs, h.conn, h.client = svc, gs, conn, api.NewControllerClient(conn)
	t.Cleanup(h.stop)
}

func (h *harness) stop() {
	if h.gs == nil {
		return
	}
	h.conn.Close()
	h.gs.Stop()
	h.svc.Close()
	h.gs = nil
}

// restart simulates a sandboxer restart on the same state directory.
func (h *harness) restart() {
	h.stop()
	h.wasm = &fakeBackend{name: "wasm"}
	h.vm = &fakeBackend{name: "vm", recoverLive: h.vmRecoverLive, waitGate: h.vmWaitGate}
	h.start()
}

func podOptions(t *testing.T, annotations map[string]string) *anypb.Any {
	t.Helper()
	a, err := typeurl.MarshalAnyToProto(&runtimeapi.PodSandboxConfig{
		Metadata:    &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "default", Uid: "u"},
		Hostname:    "pod-host",
		Annotations: annotations,
		Labels:      map[string]string{"app": "x"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{Resources: &runtimeapi.LinuxContainerResources{
			MemoryLimitInBytes: 64 << 20, CpuQuota: 50000, CpuPeriod: 100000,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (h *harness) createStart(ctx context.Context, id string, ann map[string]string) *api.ControllerStartResponse {
	h.t.Helper()
	if _, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: id, Options: podOptions(h.t, ann), NetnsPath: "/var/run/netns/x"}); err != nil {
		h.t.Fatalf("create %s: %v", id, err)
	}
	resp, err := h.client.Start(ctx, &api.ControllerStartRequest{SandboxID: id})
	if err != nil {
		h.t.Fatalf("start %s: %v", id, err)
	}
	return resp
}

func dialTasks(t *testing.T, address string) taskAPI.TTRPCTaskService {
	t.Helper()
	p, ok := strings.CutPrefix(address, "ttrpc+unix://")
	if !ok {
		t.Fatalf("address %q is not ttrpc+unix://", address)
	}
	c, err := net.Dial("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	cl := ttrpc.NewClient(c)
	t.Cleanup(func() { cl.Close() })
	return taskAPI.NewTTRPCTaskClient(cl)
}

func TestUnknownSandboxIsNotFound(t *testing.T) {
	h := newHarness(t, "")
	ctx := context.Background()
	const id = "never-created"
	calls := map[string]func() error{
		"Start": func() error { _, err := h.client.Start(ctx, &api.ControllerStartRequest{SandboxID: id}); return err },
		"Platform": func() error {
			_, err := h.client.Platform(ctx, &api.ControllerPlatformRequest{SandboxID: id})
			return err
		},
		"Stop":   func() error { _, err := h.client.Stop(ctx, &api.ControllerStopRequest{SandboxID: id}); return err },
		"Wait":   func() error { _, err := h.client.Wait(ctx, &api.ControllerWaitRequest{SandboxID: id}); return err },
		"Status": func() error { _, err := h.client.Status(ctx, &api.ControllerStatusRequest{SandboxID: id}); return err },
		"Shutdown": func() error {
			_, err := h.client.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: id})
			return err
		},
		"Metrics": func() error {
			_, err := h.client.Metrics(ctx, &api.ControllerMetricsRequest{SandboxID: id})
			return err
		},
		"Update": func() error {
			_, err := h.client.Update(ctx, &api.ControllerUpdateRequest{SandboxID: id, Sandbox: &types.Sandbox{SandboxID: id}})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := errgrpc.ToNative(call())
			if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), id) {
				t.Fatalf("%s: %v, want NotFound naming %s", name, err, id)
			}
		})
	}
	if _, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: "../escape"}); !errors.Is(errgrpc.ToNative(err), errdefs.ErrInvalidArgument) {
		t.Fatalf("path-like ID: %v, want InvalidArgument", err)
	}
}

func TestLifecycle(t *testing.T) {
	h := newHarness(t, "")
	ctx := context.Background()
	id := "sb1"
	st := h.createStart(ctx, id, map[string]string{AnnotationIsolation: "vm"})
	if st.Version != 3 || !strings.HasPrefix(st.Address, "ttrpc+unix:///") || st.Pid != 4242 {
		t.Fatalf("start response: %+v", st)
	}
	if st.Spec.GetTypeUrl() != specTypeURL {
		t.Fatalf("spec type %q", st.Spec.GetTypeUrl())
	}
	var sp specs.Spec
	if err := json.Unmarshal(st.Spec.GetValue(), &sp); err != nil || sp.Hostname != "pod-host" || *sp.Linux.Resources.Memory.Limit != 64<<20 {
		t.Fatalf("spec %s: %v", st.Spec.GetValue(), err)
	}
	sockPath := strings.TrimPrefix(st.Address, "ttrpc+unix://")
	fi, err := os.Stat(sockPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("task socket %s: %v %v", sockPath, fi, err)
	}
	if len(h.vm.started) != 1 || len(h.wasm.started) != 0 {
		t.Fatalf("pod annotation isolation=vm must start the vm backend at Start: vm=%v wasm=%v", h.vm.started, h.wasm.started)
	}
	// Start again is idempotent.
	st2, err := h.client.Start(ctx, &api.ControllerStartRequest{SandboxID: id})
	if err != nil || st2.Address != st.Address || len(h.vm.started) != 1 {
		t.Fatalf("second start: %v %+v", err, st2)
	}

	tasks := dialTasks(t, st.Address)
	if _, err := tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	// Shutdown on the Task API ends nothing: the socket still answers.
	if _, err := tasks.Connect(ctx, &taskAPI.ConnectRequest{ID: "c1"}); err != nil {
		t.Fatalf("task socket gone after Task API Shutdown: %v", err)
	}

	status, err := h.client.Status(ctx, &api.ControllerStatusRequest{SandboxID: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	if status.State != stateReady || status.Address != st.Address || status.Version != 3 || status.Info["backend"] != "vm" || status.Info["tasks"] != "1" {
		t.Fatalf("status %+v", status)
	}
	plat, err := h.client.Platform(ctx, &api.ControllerPlatformRequest{SandboxID: id})
	if err != nil || plat.Platform.OS != "linux" {
		t.Fatalf("platform %v %v", plat, err)
	}

	m, err := h.client.Metrics(ctx, &api.ControllerMetricsRequest{SandboxID: id})
	if err != nil {
		t.Fatal(err)
	}
	v, err := typeurl.UnmarshalAny(m.Metrics.Data)
	if err != nil {
		t.Fatal(err)
	}
	cm, ok := v.(*cg2.Metrics)
	if !ok || cm.Memory.Usage != 65536 || cm.Memory.UsageLimit != 64<<20 || cm.CPU.UsageUsec != 5000 || cm.Pids.Current != 1 {
		t.Fatalf("metrics %T %+v", v, v)
	}

	waitc := make(chan *api.ControllerWaitResponse, 1)
	go func() {
		w, err := h.client.Wait(ctx, &api.ControllerWaitRequest{SandboxID: id})
		if err != nil {
			t.Error(err)
		}
		waitc <- w
	}()
	select {
	case <-waitc:
		t.Fatal("Wait returned before Stop")
	case <-time.After(50 * time.Millisecond):
	}
	for range 2 { // Stop is idempotent
		if _, err := h.client.Stop(ctx, &api.ControllerStopRequest{SandboxID: id, TimeoutSecs: 1}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case w := <-waitc:
		if w == nil || w.ExitedAt == nil {
			t.Fatalf("wait response %+v", w)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after Stop")
	}
	status, _ = h.client.Status(ctx, &api.ControllerStatusRequest{SandboxID: id})
	if status.State != stateNotRdy || status.ExitedAt == nil {
		t.Fatalf("status after stop %+v", status)
	}
	if _, err := h.client.Start(ctx, &api.ControllerStartRequest{SandboxID: id}); !errors.Is(errgrpc.ToNative(err), errdefs.ErrFailedPrecondition) {
		t.Fatalf("start after exit: %v", err)
	}

	for range 2 {
		if _, err := h.client.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Lstat(sockPath); !os.IsNotExist(err) {
		t.Fatalf("task socket left after Shutdown: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.svc.StateDir(), "sandboxes", id)); !os.IsNotExist(err) {
		t.Fatalf("sandbox dir left after Shutdown: %v", err)
	}
	if len(h.vm.shutdown) != 1 {
		t.Fatalf("backend shutdown calls: %v", h.vm.shutdown)
	}
	if _, err := h.client.Status(ctx, &api.ControllerStatusRequest{SandboxID: id}); !errors.Is(errgrpc.ToNative(err), errdefs.ErrNotFound) {
		t.Fatalf("status after shutdown: %v", err)
	}
}

func TestLazyRouting(t *testing.T) {
	tests := []struct {
		name    string
		handler string
		ctrAnn  map[string]string
		want    string
	}{
		{name: "sandboxer default", want: "wasm"},
		{name: "handler default", handler: "kuasar-vm", want: "vm"},
		{name: "container annotation wins", handler: "kuasar-vm", ctrAnn: map[string]string{AnnotationIsolation: "wasm"}, want: "wasm"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, "")
			ctx := context.Background()
			id := "lazy" + string(rune('a'+i))
			ann := map[string]string{}
			if tt.handler != "" {
				ann[annotationRuntimeHandler] = tt.handler
			}
			if _, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: id, Annotations: ann}); err != nil {
				t.Fatal(err)
			}
			st, err := h.client.Start(ctx, &api.ControllerStartRequest{SandboxID: id})
			if err != nil {
				t.Fatal(err)
			}
			if len(h.wasm.started)+len(h.vm.started) != 0 {
				t.Fatal("backend started before the first container")
			}
			tasks := dialTasks(t, st.Address)
			if _, err := tasks.State(ctx, &taskAPI.StateRequest{ID: "c"}); !errors.Is(errgrpc.ToNative(err), errdefs.ErrNotFound) {
				t.Fatalf("state before any container: %v", err)
			}
			bundle := t.TempDir()
			b, _ := json.Marshal(specs.Spec{Annotations: tt.ctrAnn})
			os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600)
			if _, err := tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c", Bundle: bundle}); err != nil {
				t.Fatal(err)
			}
			got := h.wasm
			if tt.want == "vm" {
				got = h.vm
			}
			if len(got.started) != 1 {
				t.Fatalf("want the %s backend started, wasm=%v vm=%v", tt.want, h.wasm.started, h.vm.started)
			}
		})
	}
}

func TestCreateErrorsLeaveNothing(t *testing.T) {
	h := newHarness(t, "")
	ctx := context.Background()
	_, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: "bad", Options: podOptions(t, map[string]string{AnnotationIsolation: "docker"})})
	if !errors.Is(errgrpc.ToNative(err), errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), AnnotationIsolation) {
		t.Fatalf("unknown isolation: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.svc.StateDir(), "sandboxes", "bad")); !os.IsNotExist(err) {
		t.Fatalf("state left behind: %v", err)
	}
	h.createStart(ctx, "dup", nil)
	if _, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: "dup"}); !errors.Is(errgrpc.ToNative(err), errdefs.ErrAlreadyExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	// A backend that fails to start leaves the sandbox in place but not running.
	h.vm.failStart = errors.New("boom")
	if _, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: "vmfail", Options: podOptions(t, map[string]string{AnnotationIsolation: "vm"})}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.Start(ctx, &api.ControllerStartRequest{SandboxID: "vmfail"}); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("start with failing backend: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(h.svc.StateDir(), "sandboxes", "vmfail"))
	for _, e := range entries {
		if e.Name() != recordFile {
			t.Fatalf("failed start left %s", e.Name())
		}
	}
}

// TestRecordsVisibleBeforeReattach restarts on a state directory whose
// sandbox is slow to re-attach: from the moment LoadRecords returns (the
// daemon serves only after it), a Status on that sandbox waits for its
// recovery and is never told the sandbox does not exist. Before, recovery
// read the records in the background after serving had started, and a
// loaded machine answered NotFound to containerd for a live pod.
func TestRecordsVisibleBeforeReattach(t *testing.T) {
	dir := shortTempDir(t)
	h := newHarness(t, dir)
	ctx := context.Background()
	h.createStart(ctx, "slow", map[string]string{AnnotationIsolation: "wasm"})
	state := h.svc.StateDir()
	h.stop()

	gate := make(chan struct{})
	wasm := &fakeBackend{name: "wasm", recoverGate: gate}
	svc, err := New(ctx, WithStateDir(state), WithBackend(wasm), WithBackend(&fakeBackend{name: "vm"}))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	wait, err := svc.LoadRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		st  *api.ControllerStatusResponse
		err error
	}
	got := make(chan result, 1)
	go func() {
		st, err := svc.Status(ctx, &api.ControllerStatusRequest{SandboxID: "slow"})
		got <- result{st, err}
	}()
	select {
	case r := <-got:
		t.Fatalf("Status answered before the sandbox was re-attached: %+v %v", r.st, r.err)
	case <-time.After(100 * time.Millisecond): // still waiting, as it must
	}
	close(gate)
	wait()
	select {
	case r := <-got:
		if r.err != nil || r.st.SandboxID != "slow" {
			t.Fatalf("status after re-attach: %+v %v", r.st, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Status still blocked after the sandbox was re-attached")
	}
}

func TestRecoveryAfterRestart(t *testing.T) {
	dir := shortTempDir(t)
	h := newHarness(t, dir)
	ctx := context.Background()
	st := h.createStart(ctx, "r1", map[string]string{AnnotationIsolation: "wasm"})
	h.createStart(ctx, "r2", nil) // lazy: no backend yet
	if _, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: "r3"}); err != nil {
		t.Fatal(err)
	}
	// A crash mid-create leaves a directory without a record.
	os.MkdirAll(filepath.Join(h.svc.StateDir(), "sandboxes", "half"), 0o700)

	h.restart()
	if len(h.wasm.recovered) != 1 || h.wasm.recovered[0] != "r1" {
		t.Fatalf("recovered %v", h.wasm.recovered)
	}
	if _, err := os.Stat(filepath.Join(h.svc.StateDir(), "sandboxes", "half")); !os.IsNotExist(err) {
		t.Fatal("orphan directory not removed")
	}
	w, err := h.client.Wait(ctx, &api.ControllerWaitRequest{SandboxID: "r1"})
	if err != nil || w.ExitStatus != 137 {
		t.Fatalf("wait on recovered dead sandbox: %+v %v", w, err)
	}
	s, err := h.client.Status(ctx, &api.ControllerStatusRequest{SandboxID: "r1"})
	if err != nil || s.State != stateNotRdy || s.Address != st.Address {
		t.Fatalf("status %+v %v", s, err)
	}
	// The task socket is served again.
	if _, err := dialTasks(t, st.Address).Connect(ctx, &taskAPI.ConnectRequest{}); err != nil {
		t.Fatalf("task socket after restart: %v", err)
	}
	// The lazy sandbox lost nothing: it is still ready and routes its
	// first container after the restart.
	s2, err := h.client.Status(ctx, &api.ControllerStatusRequest{SandboxID: "r2"})
	if err != nil || s2.State != stateReady {
		t.Fatalf("lazy sandbox after restart: %+v %v", s2, err)
	}
	if _, err := dialTasks(t, s2.Address).Create(ctx, &taskAPI.CreateTaskRequest{ID: "c", Bundle: t.TempDir()}); err != nil {
		t.Fatalf("first container after restart: %v", err)
	}
	if len(h.wasm.started) != 1 || h.wasm.started[0] != "r2" {
		t.Fatalf("started after restart: %v", h.wasm.started)
	}
	s3, err := h.client.Status(ctx, &api.ControllerStatusRequest{SandboxID: "r3"})
	if err != nil || s3.State != stateCreated {
		t.Fatalf("created-only sandbox after restart: %+v %v", s3, err)
	}
	for _, id := range []string{"r1", "r2", "r3"} {
		if _, err := h.client.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: id}); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(h.svc.StateDir(), "sandboxes"))
	if len(entries) != 0 {
		t.Fatalf("left after shutdown: %v", entries)
	}
	if entries, _ := os.ReadDir(filepath.Join(h.svc.StateDir(), "b")); len(entries) != 0 {
		t.Fatalf("backend dirs left after shutdown: %v", entries)
	}
}

func TestStoreAtomicSave(t *testing.T) {
	s := &store{root: t.TempDir()}
	r := &record{ID: "a", State: stateCreated, CreatedAt: time.Now().UTC()}
	for i := range 20 {
		r.ExitStatus = uint32(i)
		if err := s.save(r); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(s.dir("a"))
	if len(entries) != 1 || entries[0].Name() != recordFile {
		t.Fatalf("temp files left: %v", entries)
	}
	recs, orphans, err := s.load()
	if err != nil || len(recs) != 1 || len(orphans) != 0 || recs[0].ExitStatus != 19 {
		t.Fatalf("load: %+v %v %v", recs, orphans, err)
	}
	// A torn (non-JSON) record is treated as an orphan, never half-read.
	os.WriteFile(filepath.Join(s.dir("a"), recordFile), []byte("{\"id\":"), 0o600)
	recs, orphans, _ = s.load()
	if len(recs) != 0 || len(orphans) != 1 {
		t.Fatalf("torn record: %v %v", recs, orphans)
	}
}

// TestShutdownWithoutStop checks that the exit watcher of a sandbox shut
// down while running does not write its record back afterwards.
func TestShutdownWithoutStop(t *testing.T) {
	h := newHarness(t, "")
	ctx := context.Background()
	for i := range 20 {
		id := fmt.Sprintf("s%d", i)
		h.createStart(ctx, id, map[string]string{AnnotationIsolation: "wasm"})
		if _, err := h.client.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: id}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	entries, _ := os.ReadDir(filepath.Join(h.svc.StateDir(), "sandboxes"))
	if len(entries) != 0 {
		t.Fatalf("record written back after Shutdown: %v", entries)
	}
}

// TestSlowBackendStart checks that Status answers while a backend is still
// starting (a VM boots for seconds), and that a sandbox shut down meanwhile
// gets its new instance shut down too.
func TestSlowBackendStart(t *testing.T) {
	h := newHarness(t, "")
	ctx := context.Background()
	h.vm.gate = make(chan struct{})
	if _, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: "slow", Options: podOptions(t, map[string]string{AnnotationIsolation: "vm"})}); err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() {
		_, err := h.client.Start(ctx, &api.ControllerStartRequest{SandboxID: "slow"})
		started <- err
	}()
	time.Sleep(50 * time.Millisecond)
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := h.client.Status(sctx, &api.ControllerStatusRequest{SandboxID: "slow", Verbose: true})
	if err != nil {
		t.Fatalf("status during a slow start: %v", err)
	}
	if st.State != stateCreated || st.Info["backend"] != "vm" {
		t.Fatalf("status during start: %+v", st)
	}
	if _, err := h.client.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: "slow"}); err != nil {
		t.Fatal(err)
	}
	close(h.vm.gate)
	if err := <-started; err == nil {
		t.Fatal("start of a sandbox shut down meanwhile succeeded")
	}
	h.vm.mu.Lock()
	defer h.vm.mu.Unlock()
	if len(h.vm.started) != 1 || len(h.vm.shutdown) != 1 {
		t.Fatalf("instance started %v, shut down %v: it must be shut down", h.vm.started, h.vm.shutdown)
	}
	entries, _ := os.ReadDir(filepath.Join(h.svc.StateDir(), "b"))
	if len(entries) != 0 {
		t.Fatalf("backend dir left: %v", entries)
	}
}

// TestStopRecordsExitBeforeReply: once Stop has answered, the sandbox's
// record on disk says it exited (a sandboxer killed right after the reply
// reports the exit, not a crash), without waiting for the goroutine that
// watches the backend: here that watcher is held up for the whole test.
func TestStopRecordsExitBeforeReply(t *testing.T) {
	h := newHarness(t, "")
	gate := make(chan struct{})
	defer close(gate)
	h.wasm.waitGate = gate
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.createStart(ctx, "stopped", map[string]string{AnnotationIsolation: "wasm"})
	if _, err := h.client.Stop(ctx, &api.ControllerStopRequest{SandboxID: "stopped"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(h.svc.StateDir(), "sandboxes", "stopped", recordFile))
	if err != nil {
		t.Fatal(err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if !r.Exited || r.ExitStatus != 0 || r.State != stateNotRdy {
		t.Fatalf("record after Stop: exited %v, status %d, state %s; want exited 0, %s", r.Exited, r.ExitStatus, r.State, stateNotRdy)
	}
	st, err := h.client.Status(ctx, &api.ControllerStatusRequest{SandboxID: "stopped"})
	if err != nil {
		t.Fatal(err)
	}
	if st.State != stateNotRdy {
		t.Fatalf("Status after Stop: %s, want %s", st.State, stateNotRdy)
	}
}

// TestTaskSocketAcceptsBurst: connections that wait on a sandbox's task
// socket all at once are each accepted and served (the acceptor takes one
// per epoll event and relies on the level-triggered event for the rest).
func TestTaskSocketAcceptsBurst(t *testing.T) {
	h := newHarness(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := h.createStart(ctx, "burst", nil)
	p, _ := strings.CutPrefix(st.Address, "ttrpc+unix://")
	const n = 32
	clients := make([]*ttrpc.Client, n)
	for i := range clients {
		c, err := net.Dial("unix", p) // queued in the backlog until accepted
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = ttrpc.NewClient(c)
		defer clients[i].Close()
	}
	for i, cl := range clients {
		if _, err := taskAPI.NewTTRPCTaskClient(cl).Connect(ctx, &taskAPI.ConnectRequest{}); err != nil {
			t.Fatalf("connection %d of %d: %v", i, n, err)
		}
	}
}
