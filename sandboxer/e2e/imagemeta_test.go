package e2e

import (
	"context"
	"testing"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/testenv"
	"github.com/kuasar-go/kuasar/sandboxer"
)

// TestImageMetadataFromContainerd reads routing metadata of images held by a
// real containerd, as the sandboxer does at a pod's first container.
func TestImageMetadataFromContainerd(t *testing.T) {
	e := testenv.NewEnv(t)
	ctx := context.Background()
	wasmImg, err := images.BuildWasmImage(ctx, fixtures.Hello, "hello.wasm")
	if err != nil {
		t.Fatal(err)
	}
	e.ImportImagePlatform(wasmImg, "docker.io/kuasar/meta-wasm:test", "wasi/wasm")
	art, err := images.BuildWasmArtifact(ctx, fixtures.Hello, "hello.wasm")
	if err != nil {
		t.Fatal(err)
	}
	e.ImportImagePlatform(art, "docker.io/kuasar/meta-artifact:test", "wasip1/wasm")
	vmWasm, err := images.BuildWasmImage(ctx, fixtures.Hello, "hello.wasm",
		images.WithAnnotation(images.AnnotationIsolation, "vm"), images.WithAnnotation(images.AnnotationHypervisor, "cloud-hypervisor"))
	if err != nil {
		t.Fatal(err)
	}
	e.ImportImagePlatform(vmWasm, "docker.io/kuasar/meta-vmwasm:test", "wasi/wasm")
	e.ImportImage(testenv.BusyboxImage(t, []string{"/bin/sh"}), "docker.io/kuasar/meta-linux:test")

	r := sandboxer.NewContainerdImages(e.ContainerdSock)
	defer r.Close()
	tests := []struct {
		ref   string
		kind  images.Kind
		iso   images.Isolation
		hyper string
	}{
		{"docker.io/kuasar/meta-wasm:test", images.KindWasm, images.IsolationAuto, ""},
		{"docker.io/kuasar/meta-artifact:test", images.KindWasm, images.IsolationAuto, ""},
		{"docker.io/kuasar/meta-vmwasm:test", images.KindWasm, images.IsolationVM, "cloud-hypervisor"},
		{"docker.io/kuasar/meta-linux:test", images.KindLinux, images.IsolationAuto, ""},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			md, err := r.ImageMetadata(ctx, "k8s.io", tt.ref)
			if err != nil {
				t.Fatal(err)
			}
			if md.Kind != tt.kind || md.Isolation != tt.iso || md.Hypervisor != tt.hyper {
				t.Fatalf("metadata %+v, want kind %s isolation %q hypervisor %q", md, tt.kind, tt.iso, tt.hyper)
			}
		})
	}
	if _, err := r.ImageMetadata(ctx, "k8s.io", "docker.io/kuasar/absent:test"); err == nil {
		t.Fatal("metadata of an absent image succeeded")
	}
}
