package sandboxer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/sandboxer"
	"github.com/kuasar-go/kuasar/wasm/wasmbackend"
)

// rig is a sandboxer with the real wasm backend, served on real sockets in
// this process: the gRPC Sandbox API and one ttrpc Task API per sandbox.
type rig struct {
	dir    string
	src    string // the "image" directory bind-mounted as each rootfs
	svc    *sandboxer.Service
	client api.ControllerClient
}

func newRig(tb testing.TB, opts ...wasmbackend.Option) *rig {
	tb.Helper()
	return newRigAt(tb, func(dir string) string { return filepath.Join(dir, "s") }, opts...)
}

// newRigAt is newRig with the state directory state(dir) for the rig's
// temporary directory dir.
func newRigAt(tb testing.TB, state func(dir string) string, opts ...wasmbackend.Option) *rig {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (rootfs bind mounts)")
	}
	// /dev/shm is tmpfs, like /run where the sandboxer keeps its state.
	dir, err := os.MkdirTemp("/dev/shm", "kr")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	// Runs before the RemoveAll: tests that end with sandboxes still
	// running (their tasks' rootfs mounted, as after a daemon restart) must
	// not leave those mounts on the machine.
	tb.Cleanup(func() { unmountBelow(tb, dir) })
	ctx := context.Background()
	wb, err := wasmbackend.New(ctx, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { wb.Close(ctx) })
	svc, err := sandboxer.New(ctx, sandboxer.WithStateDir(state(dir)), sandboxer.WithBackend(wb))
	if err != nil {
		tb.Fatal(err)
	}
	sock := filepath.Join(dir, "sb.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		tb.Fatal(err)
	}
	gs := grpc.NewServer()
	svc.Register(gs)
	go gs.Serve(l)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close(); gs.Stop(); svc.Close() })
	src := filepath.Join(dir, "image")
	os.MkdirAll(src, 0o755)
	for _, name := range []string{"hello", "wasi"} {
		if _, err := fixtures.WriteFile(src, name); err != nil {
			tb.Fatal(err)
		}
	}
	return &rig{dir: dir, src: src, svc: svc, client: api.NewControllerClient(conn)}
}

// unmountBelow detaches every mount below dir, deepest first.
func unmountBelow(tb testing.TB, dir string) {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		tb.Errorf("read the mount table: %v", err)
		return
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].Mountpoint) > len(mounts[j].Mountpoint) })
	for _, m := range mounts {
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
			tb.Errorf("unmount %s: %v", m.Mountpoint, err)
		}
	}
}

// bundle writes an OCI bundle for id running args and returns the request
// that creates its task (rootfs bind-mounted from the image directory).
func (r *rig) bundle(tb testing.TB, id string, args []string) *taskAPI.CreateTaskRequest {
	tb.Helper()
	dir := filepath.Join(r.dir, "b", id)
	if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		tb.Fatal(err)
	}
	sp := specs.Spec{Version: specs.Version, Root: &specs.Root{Path: "rootfs"},
		Process: &specs.Process{Args: args, Cwd: "/"}}
	b, _ := json.Marshal(&sp)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		tb.Fatal(err)
	}
	return &taskAPI.CreateTaskRequest{ID: id, Bundle: dir,
		Rootfs: []*types.Mount{{Type: "bind", Source: r.src, Options: []string{"rbind", "ro"}}}}
}

// taskClient dials a sandbox's Task API address.
func taskClient(address string) (taskAPI.TTRPCTaskService, func(), error) {
	p, ok := strings.CutPrefix(address, "ttrpc+unix://")
	if !ok {
		return nil, nil, fmt.Errorf("address %q", address)
	}
	c, err := net.Dial("unix", p)
	if err != nil {
		return nil, nil, err
	}
	cl := ttrpc.NewClient(c)
	return taskAPI.NewTTRPCTaskClient(cl), func() { cl.Close() }, nil
}

// runOnce runs the whole life of one sandbox with one task: Create, Start,
// task Create/Start/Wait/Delete, Stop, Shutdown. It returns the task's exit.
func (r *rig) runOnce(ctx context.Context, id string, req *taskAPI.CreateTaskRequest) (uint32, error) {
	ctx = namespaces.WithNamespace(ctx, "bench")
	if _, err := r.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: id}); err != nil {
		return 0, err
	}
	st, err := r.client.Start(ctx, &api.ControllerStartRequest{SandboxID: id})
	if err != nil {
		return 0, err
	}
	tasks, closeFn, err := taskClient(st.Address)
	if err != nil {
		return 0, err
	}
	defer closeFn()
	if _, err := tasks.Create(ctx, req); err != nil {
		return 0, err
	}
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: req.ID}); err != nil {
		return 0, err
	}
	w, err := tasks.Wait(ctx, &taskAPI.WaitRequest{ID: req.ID})
	if err != nil {
		return 0, err
	}
	if _, err := tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: req.ID}); err != nil {
		return 0, err
	}
	if _, err := r.client.Stop(ctx, &api.ControllerStopRequest{SandboxID: id}); err != nil {
		return 0, err
	}
	if _, err := r.client.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: id}); err != nil {
		return 0, err
	}
	return w.ExitStatus, nil
}

func init() {
	// Keep test and benchmark output readable; failures print their own context.
	log.SetLevel("warn")
}
