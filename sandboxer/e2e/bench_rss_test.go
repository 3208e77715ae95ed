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
