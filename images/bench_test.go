package images_test

import (
	"context"
	"path/filepath"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/fixtures"
)

func benchStore(b *testing.B, _ int) *images.Store {
	s, err := images.OpenStore(filepath.Join(b.TempDir(), "store"))
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkPullWasmImage pulls the plain hello image from an in-process
// registry into a fresh store (3 blobs, unpack, module check).
func BenchmarkPullWasmImage(b *testing.B) {
	ctx := context.Background()
	reg := newTestRegistry(b, "", "")
	img, err := images.BuildWasmImage(ctx, fixtures.Hello, "hello.wasm")
	if err != nil {
		b.Fatal(err)
	}
	ref := reg.host + "/bench/hello:1"
	if err := img.Push(ctx, ref); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := benchStore(b, i)
		b.StartTimer()
		if _, err := s.Pull(ctx, ref); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResolveCached resolves an image already in the store: what
// `kuasar run REF` pays before the engine starts.
func BenchmarkResolveCached(b *testing.B) {
	ctx := context.Background()
	img, err := images.BuildWasmImage(ctx, fixtures.Hello, "hello.wasm")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	archive := filepath.Join(dir, "hello.tar")
	if err := img.WriteArchiveFile(archive, "example.com/hello:1"); err != nil {
		b.Fatal(err)
	}
	s := benchStore(b, 0)
	if _, err := s.Resolve(ctx, archive); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Resolve(ctx, "example.com/hello:1"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkImportBusyboxArchive imports a 1.9 MiB busybox archive (the
// pause image) into a fresh store, unpack included.
func BenchmarkImportBusyboxArchive(b *testing.B) {
	ctx := context.Background()
	files, err := images.BusyboxFiles("/bin/busybox")
	if err != nil {
		b.Fatal(err)
	}
	img, err := images.BuildLinuxImage(ctx, files, ocispec.ImageConfig{Entrypoint: []string{"/bin/sleep", "2147483647"}}, ocispec.Platform{})
	if err != nil {
		b.Fatal(err)
	}
	archive := filepath.Join(b.TempDir(), "pause.tar")
	if err := img.WriteArchiveFile(archive, "registry.k8s.io/pause:3.10.2"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := benchStore(b, i)
		b.StartTimer()
		if _, err := s.Import(ctx, archive, ""); err != nil {
			b.Fatal(err)
		}
	}
}
