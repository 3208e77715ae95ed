package wasmtask_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/content"
	cimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/typeurl/v2"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/testenv"
	"github.com/kuasar-go/kuasar/task/events"
	"github.com/kuasar-go/kuasar/task/wasmtask"
	"github.com/kuasar-go/kuasar/task/wasmtask/contentstore"
)

// startContainerd runs a real containerd v2.4.2 with only its gRPC and ttrpc
// sockets configured, and returns both addresses.
func startContainerd(t *testing.T) (grpcSock, ttrpcSock string) {
	t.Helper()
	tools := testenv.FindTools(t)
	dir := testenv.TempDir(t)
	grpcSock, ttrpcSock = filepath.Join(dir, "c.sock"), filepath.Join(dir, "c.sock.ttrpc")
	cfg := fmt.Sprintf("version = 4\nroot = %q\nstate = %q\n[plugins.'io.containerd.server.v1.grpc']\n  address = %q\n[plugins.'io.containerd.server.v1.ttrpc']\n  address = %q\n[plugins.'io.containerd.shim.v1.manager']\n  socket_dir = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), grpcSock, ttrpcSock, filepath.Join(dir, "s"))
	p := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := testenv.Start(t, nil, tools.Containerd, "--config", p, "--log-level", "warn")
	testenv.WaitSocket(t, grpcSock, 20*time.Second, proc)
	testenv.WaitSocket(t, ttrpcSock, 20*time.Second, proc)
	return grpcSock, ttrpcSock
}

// pushImage writes img's blobs into containerd's content store and names it.
func pushImage(t *testing.T, ctx context.Context, cl *containerd.Client, img *images.MemoryImage, name string) {
	t.Helper()
	write := func(d ocispec.Descriptor) {
		b, ok := img.Blob(d.Digest)
		if !ok {
			t.Fatalf("blob %s missing", d.Digest)
		}
		if err := content.WriteBlob(ctx, cl.ContentStore(), d.Digest.String(), bytes.NewReader(b), d); err != nil {
			t.Fatal(err)
		}
	}
	mb, _ := img.Blob(img.Root.Digest)
	var man ocispec.Manifest
	if err := json.Unmarshal(mb, &man); err != nil {
		t.Fatal(err)
	}
	write(man.Config)
	for _, l := range man.Layers {
		write(l)
	}
	write(img.Root)
	if _, err := cl.ImageService().Create(ctx, cimages.Image{Name: name, Target: img.Root}); err != nil {
		t.Fatal(err)
	}
}

// TestContainerdContentStoreAndEvents runs a container whose module is only
// a wasm layer in a real containerd's content store, and checks that the
// task events reach containerd's event service with the namespace.
func TestContainerdContentStoreAndEvents(t *testing.T) {
	requireRoot(t)
	grpcSock, ttrpcSock := startContainerd(t)
	cl, err := containerd.New(grpcSock)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := namespaces.WithNamespace(context.Background(), testNS)
	ctx, done, err := cl.WithLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer done(context.Background())

	img, err := images.BuildImage(images.ImageSpec{
		Config: ocispec.Image{
			Platform: ocispec.Platform{OS: "wasip1", Architecture: "wasm"},
			Config:   ocispec.ImageConfig{Entrypoint: []string{"/app.wasm"}},
		},
		Layers: []images.Layer{{MediaType: images.MediaTypeWasmLayer, Data: fixtures.WASI}},
	})
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, ctx, cl, img, "example.com/wasi:1")
	spec, _ := typeurl.MarshalAny(&specs.Spec{Version: specs.Version})
	if _, err := cl.ContainerService().Create(ctx, containers.Container{
		ID: "layered", Image: "example.com/wasi:1", Runtime: containers.RuntimeInfo{Name: "io.containerd.kuasar.v1"}, Spec: spec,
	}); err != nil {
		t.Fatal(err)
	}

	evs, errs := cl.Subscribe(ctx, `topic~="/tasks/"`)
	// containerd sends an event to the subscriptions registered when it is
	// published, and Subscribe returns before this one is: publish a probe
	// until it arrives, then no task event can be missed.
	const probe = "/tasks/subscription-probe"
	subscribed := time.After(30 * time.Second)
	for registered := false; !registered; {
		if err := cl.EventService().Publish(ctx, probe, &eventstypes.TaskOOM{ContainerID: "probe"}); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-evs:
			if e.Topic != probe {
				t.Fatalf("event %s before any task ran", e.Topic)
			}
			registered = true
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(50 * time.Millisecond): // publish again
		case <-subscribed:
			t.Fatal("the event subscription received no probe within 30 s")
		}
	}

	pub, err := events.NewRemotePublisher(ttrpcSock)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	resolver := contentstore.New(grpcSock)
	defer resolver.Close()
	h := newHarness(t, wasmtask.WithModuleResolver(resolver), wasmtask.WithPublisher(pub))
	b := h.bundle(t, "layered", []string{"/app.wasm", "args", "z"}, nil)
	if code := h.runToExit(t, b); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if got := b.stdout.wait(t); got != "/app.wasm\nargs\nz\n" {
		t.Errorf("stdout %q", got)
	}
	r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "layered"})).get(t)

	var topics []string
	timeout := time.After(10 * time.Second)
	for len(topics) < 4 {
		select {
		case e := <-evs:
			if e.Topic == probe {
				continue // published again before the first one arrived
			}
			if e.Namespace != testNS {
				t.Errorf("event %s in namespace %q", e.Topic, e.Namespace)
			}
			topics = append(topics, e.Topic)
			if e.Topic == "/tasks/exit" {
				v, err := typeurl.UnmarshalAny(e.Event)
				if ex, ok := v.(*eventstypes.TaskExit); err != nil || !ok || ex.ContainerID != "layered" {
					t.Errorf("exit event %v %v", v, err)
				}
			}
		case err := <-errs:
			t.Fatal(err)
		case <-timeout:
			t.Fatalf("containerd saw only %v", topics)
		}
	}
	if got := strings.Join(topics, " "); got != "/tasks/create /tasks/start /tasks/exit /tasks/delete" {
		t.Errorf("containerd saw %s", got)
	}

	// A Linux image routed to a Wasm sandbox gets a clear error.
	linux, err := images.BuildImage(images.ImageSpec{Config: ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, Config: ocispec.ImageConfig{Entrypoint: []string{"/bin/sh"}}}})
	if err != nil {
		t.Fatal(err)
	}
	pushImage(t, ctx, cl, linux, "example.com/linux:1")
	cl.ContainerService().Create(ctx, containers.Container{ID: "linux", Image: "example.com/linux:1", Runtime: containers.RuntimeInfo{Name: "io.containerd.kuasar.v1"}, Spec: spec})
	lb := h.bundle(t, "linux", []string{"/bin/sh"}, nil)
	if _, err := h.client.Create(h.ctx, lb.req); err == nil || !strings.Contains(err.Error(), "VM isolation") {
		t.Errorf("linux image in a wasm sandbox: %v", err)
	}
	ensureUnmounted(t, lb)
}
