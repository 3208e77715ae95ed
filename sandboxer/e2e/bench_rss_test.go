package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

// BenchmarkIdleSandboxRSS starts N (default 1000, env KUASAR_RSS_SANDBOXES)
// Wasm sandboxes in the real kuasar-sandboxer binary, each running one
// module blocked reading stdin, and reports the sandboxer's resident memory
// per idle sandbox. It talks to the sandboxer's own sockets (as containerd
// would) so that only sandboxer memory is measured.
func BenchmarkIdleSandboxRSS(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("KUASAR_RSS_SANDBOXES")); err == nil && v > 0 {
		n = v
	}
	e := testenv.NewEnv(b)
	ctx := namespaces.WithNamespace(context.Background(), "rss")
	sbc := sandboxerClient(b, e)
	src := filepath.Join(e.Dir, "image")
	os.MkdirAll(src, 0o755)
	if _, err := fixtures.WriteFile(src, "wasi"); err != nil {
		b.Fatal(err)
	}
	var fifos []*os.File
	defer func() {
		for _, f := range fifos {
			f.Close()
		}
	}()
	start := func(id string) {
		if _, err := sbc.Create(ctx, &api.ControllerCreateRequest{SandboxID: id}); err != nil {
			b.Fatal(err)
		}
		st, err := sbc.Start(ctx, &api.ControllerStartRequest{SandboxID: id})
		if err != nil {
			b.Fatal(err)
		}
		dir := filepath.Join(e.Dir, "b", id)
		os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755)
		sp, _ := json.Marshal(specs.Spec{Version: specs.Version, Root: &specs.Root{Path: "rootfs"},
			Process: &specs.Process{Args: []string{"/wasi.wasm", "idle"}, Cwd: "/"}})
		os.WriteFile(filepath.Join(dir, "config.json"), sp, 0o644)
		stdin := filepath.Join(dir, "stdin")
		if err := syscall.Mkfifo(stdin, 0o600); err != nil {
			b.Fatal(err)
		}
		// Hold the FIFO open for writing so the module blocks instead of
		// reading EOF.
		w, err := os.OpenFile(stdin, os.O_RDWR, 0)
		if err != nil {
			b.Fatal(err)
		}
		fifos = append(fifos, w)
		conn, err := net.Dial("unix", strings.TrimPrefix(st.Address, "ttrpc+unix://"))
		if err != nil {
			b.Fatal(err)
		}
		cl := ttrpc.NewClient(conn)
		defer cl.Close()
		tasks := taskAPI.NewTTRPCTaskClient(cl)
		if _, err := tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: dir, Stdin: stdin,
			Rootfs: []*types.Mount{{Type: "bind", Source: src, Options: []string{"rbind", "ro"}}}}); err != nil {
			b.Fatal(err)
		}
		if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: id}); err != nil {
			b.Fatal(err)
		}
	}
	start("warm")
	time.Sleep(200 * time.Millisecond)
	base, err := testenv.RSSBytes(e.Sandboxer.Pid())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range n {
		start(fmt.Sprintf("idle%04d", i))
	}
	b.StopTimer()
	time.Sleep(500 * time.Millisecond)
	rss, err := testenv.RSSBytes(e.Sandboxer.Pid())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(rss-base)/float64(n)/1024, "KiB-RSS/sandbox")
	b.ReportMetric(float64(rss)/(1<<20), "MiB-RSS-total")
	b.ReportMetric(float64(n), "sandboxes")
	b.Logf("sandboxer RSS %d MiB with %d idle sandboxes (base %d MiB)", rss>>20, n, base>>20)
	for i := range n {
		sbc.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: fmt.Sprintf("idle%04d", i)})
	}
	sbc.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: "warm"})
}

// BenchmarkVMSandboxerRSS starts 10 VM sandboxes (pod annotation
// kuasar.io/isolation=vm, QEMU under the host's accelerator) in the real
// kuasar-sandboxer binary and reports the sandboxer's own resident memory
// with all of them running; the QEMU processes are not counted, their
// memory is reported separately as a mean per VM.
func BenchmarkVMSandboxerRSS(b *testing.B) {
	const n = 10
	e := testenv.NewEnv(b, testenv.WithSandboxerConfig(qemuConfig(b)))
	ctx := namespaces.WithNamespace(context.Background(), "vmrss")
	sbc := sandboxerClient(b, e)
	base, err := testenv.RSSBytes(e.Sandboxer.Pid())
	if err != nil {
		b.Fatal(err)
	}
	var pids []uint32
	ids := make([]string, n)
	b.ResetTimer()
	for i := range n {
		ids[i] = fmt.Sprintf("vm%02d", i)
		if _, err := sbc.Create(ctx, &api.ControllerCreateRequest{SandboxID: ids[i],
			Annotations: map[string]string{"kuasar.io/isolation": "vm"}}); err != nil {
			b.Fatal(err)
		}
		st, err := sbc.Start(ctx, &api.ControllerStartRequest{SandboxID: ids[i]})
		if err != nil {
			b.Fatal(err)
		}
		pids = append(pids, st.Pid)
	}
	b.StopTimer()
	defer func() {
		for _, id := range ids {
			if id != "" {
				sbc.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: id})
			}
		}
	}()
	time.Sleep(500 * time.Millisecond)
	rss, err := testenv.RSSBytes(e.Sandboxer.Pid())
	if err != nil {
		b.Fatal(err)
	}
	var vmm uint64
	for _, pid := range pids {
		if pid == uint32(e.Sandboxer.Pid()) {
			b.Fatalf("sandbox pid %d is the sandboxer's: the VM backend did not start a VMM", pid)
		}
		r, err := testenv.RSSBytes(int(pid))
		if err != nil {
			b.Fatalf("VMM %d: %v", pid, err)
		}
		vmm += r
	}
	b.ReportMetric(float64(rss)/(1<<20), "sandboxer-MiB-RSS")
	b.ReportMetric(float64(rss-base)/float64(n)/(1<<20), "sandboxer-MiB-RSS/vm")
	b.ReportMetric(float64(vmm)/float64(n)/(1<<20), "vmm-MiB-RSS/vm")
	b.Logf("sandboxer RSS %d MiB with %d VM sandboxes (base %d MiB); VMMs %d MiB each", rss>>20, n, base>>20, vmm/n>>20)
}
