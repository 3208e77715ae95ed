package images_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kuasar-go/kuasar/images"
)

// module is the smallest valid Wasm module: the magic and version 1.
var module = []byte("\x00asm\x01\x00\x00\x00")

// Build a plain wasi/wasm image that asks for Wasm isolation and read its
// module back the way the sandboxer does, from blobs only.
func ExampleBuildWasmImage() {
	ctx := context.Background()
	img, err := images.BuildWasmImage(ctx, module, "app.wasm", images.WithAnnotation(images.AnnotationIsolation, "wasm"))
	if err != nil {
		panic(err)
	}
	mod, err := images.ModuleFromImage(ctx, img, img.Root)
	if err != nil {
		panic(err)
	}
	fmt.Println(mod.Metadata.Kind, mod.Metadata.Isolation, mod.Image.Shape, len(mod.Bytes))
	// Output: wasm wasm wasm-entrypoint 8
}

// Resolve an OCI archive into a runnable workload through a local store.
func ExampleStore_Resolve() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "kuasar-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	img, err := images.BuildWasmArtifact(ctx, module, "app.wasm")
	if err != nil {
		panic(err)
	}
	archive := filepath.Join(dir, "app.tar")
	if err := img.WriteArchiveFile(archive, "example.com/app:v1"); err != nil {
		panic(err)
	}
	s, err := images.OpenStore(filepath.Join(dir, "store"))
	if err != nil {
		panic(err)
	}
	w, err := s.Resolve(ctx, archive)
	if err != nil {
		panic(err)
	}
	fmt.Println(w.Metadata.Kind, w.Args[0], len(w.Module))
	list, _ := s.List(ctx)
	fmt.Println(list[0].Name, list[0].Shape)
	// Output:
	// wasm app.wasm 8
	// example.com/app:v1 wasm-artifact
}

// ParseTarget tells files, layouts, archives and references apart.
func ExampleParseTarget() {
	t, err := images.ParseTarget("ghcr.io/example/app:v1")
	if err != nil {
		panic(err)
	}
	fmt.Println(t.Kind, t.Ref)
	t, _ = images.ParseTarget("busybox")
	fmt.Println(t.Kind, t.Ref)
	// Output:
	// registry ghcr.io/example/app:v1
	// registry docker.io/library/busybox:latest
}
