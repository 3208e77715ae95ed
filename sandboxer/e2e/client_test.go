package e2e

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/containerd/containerd/api/services/sandbox/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

// syncBuffer is a bytes.Buffer safe for the cio copy goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// sandboxerClient dials the sandboxer's own Sandbox API socket.
func sandboxerClient(t testing.TB, e *testenv.Env) api.ControllerClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+e.SandboxerSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return api.NewControllerClient(conn)
}

// TestGoClient drives a kuasar sandbox with containerd's Go client: the path
// a non-CRI user takes.
func TestGoClient(t *testing.T) {
	e := testenv.NewEnv(t)
	const ref = "docker.io/kuasar/hello-client:test"
	importWasm(t, e, fixtures.Hello, "hello.wasm", ref, false)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, sb, st := startGoSandbox(ctx, t, e, "gosb")
	if st.Version != 3 || !strings.HasPrefix(st.Address, "ttrpc+unix://") {
		t.Fatalf("status %+v", st)
	}

	rec, err := c.ImageService().Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	img := containerd.NewImageWithPlatform(c, rec, platforms.Only(ocispec.Platform{OS: "wasi", Architecture: "wasm"}))
	ctr, err := c.NewContainer(ctx, "goctr",
		containerd.WithSandbox("gosb"),
		containerd.WithRuntime("io.containerd.kuasar.v1", nil),
		containerd.WithImage(img),
		containerd.WithNewSnapshot("goctr-snap", img),
		containerd.WithNewSpec(oci.WithProcessArgs("/hello.wasm", "from-go")),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)

	var out syncBuffer
	task, code := runGoTask(ctx, t, e, ctr, cio.NewCreator(cio.WithStreams(nil, &out, &out), cio.WithFIFODir(e.Dir)), st)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, fixtures.HelloGreeting) || !strings.Contains(s, "from-go") {
		t.Fatalf("output %q", s)
	}
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if dirs := sandboxDirs(e); len(dirs) != 0 {
		t.Fatalf("left after shutdown: %v", dirs)
	}
}
