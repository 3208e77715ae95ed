package images_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/fixtures"
)

// shapeCase is one image shape and what resolving it must give.
type shapeCase struct {
	name       string
	build      func(t *testing.T) *images.MemoryImage
	kind       images.Kind
	shape      images.Shape
	module     []byte // expected module bytes (KindWasm)
	function   string
	args0      string
	rootfsFile string // a file that must exist in the unpacked rootfs ("" = no rootfs)
	isolation  images.Isolation
	hypervisor string
}

func mustImage(t *testing.T, m *images.MemoryImage, err error) *images.MemoryImage {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func tarLayer(t *testing.T, files ...images.File) []byte {
	t.Helper()
	b, err := images.TarLayer(files)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wasiConfig(entrypoint ...string) ocispec.Image {
	return ocispec.Image{Platform: ocispec.Platform{OS: "wasi", Architecture: "wasm"}, Config: ocispec.ImageConfig{Entrypoint: entrypoint}}
}

func shapeCases() []shapeCase {
	ctx := context.Background()
	hello, reactor := fixtures.Hello, fixtures.Reactor
	return []shapeCase{
		{
			name: "plain wasi/wasm image built by BuildWasmImage",
			build: func(t *testing.T) *images.MemoryImage {
				m, err := images.BuildWasmImage(ctx, hello, "hello.wasm", images.WithAnnotation(images.AnnotationIsolation, "wasm"))
				return mustImage(t, m, err)
			},
			kind: images.KindWasm, shape: images.ShapeWasmEntrypoint, module: hello, args0: "/hello.wasm", rootfsFile: "hello.wasm", isolation: images.IsolationWasm,
		},
		{
			name: "plain image, relative entrypoint through a symlink, path#function, upper layer overrides lower",
			build: func(t *testing.T) *images.MemoryImage {
				lower := tarLayer(t, images.File{Path: "/lib/mod.wasm", Mode: 0o644, Data: hello})
				upper := tarLayer(t,
					images.File{Path: "/lib/mod.wasm", Mode: 0o644, Data: reactor},
					images.File{Path: "/app/run.wasm", Mode: fs.ModeSymlink | 0o777, Linkname: "../lib/mod.wasm"})
				cfg := wasiConfig("run.wasm#greet")
				cfg.Config.WorkingDir = "/app"
				return mi(t)(images.BuildImage(images.ImageSpec{Config: cfg, Layers: []images.Layer{
					{MediaType: ocispec.MediaTypeImageLayer, Data: lower}, {MediaType: ocispec.MediaTypeImageLayer, Data: upper}}}))
			},
			kind: images.KindWasm, shape: images.ShapeWasmEntrypoint, module: reactor, function: "greet", args0: "run.wasm#greet", rootfsFile: "lib/mod.wasm",
		},
		{
			name: "plain image whose upper layer whites out a decoy and the entrypoint comes from Cmd",
			build: func(t *testing.T) *images.MemoryImage {
				lower := tarLayer(t, images.File{Path: "/m.wasm", Mode: 0o644, Data: hello}, images.File{Path: "/decoy", Mode: 0o644, Data: []byte("x")})
				upper := tarLayer(t, images.File{Path: "/.wh.decoy", Mode: 0o644})
				cfg := wasiConfig()
				cfg.Config.Cmd = []string{"/m.wasm", "arg1"}
				return mi(t)(images.BuildImage(images.ImageSpec{Config: cfg, Layers: []images.Layer{
					{MediaType: ocispec.MediaTypeImageLayer, Data: lower}, {MediaType: ocispec.MediaTypeImageLayer, Data: upper}}}))
			},
			kind: images.KindWasm, shape: images.ShapeWasmEntrypoint, module: hello, args0: "/m.wasm", rootfsFile: "m.wasm",
		},
		{
			name: "plain image with a gzip layer and a zstd layer",
			build: func(t *testing.T) *images.MemoryImage {
				lower := gzipBytes(t, tarLayer(t, images.File{Path: "/old.wasm", Mode: 0o644, Data: reactor}))
				upper := zstdBytes(t, tarLayer(t, images.File{Path: "/bin/app.wasm", Mode: 0o755, Data: hello}))
				return mi(t)(images.BuildImage(images.ImageSpec{Config: wasiConfig("/bin/app.wasm"), Layers: []images.Layer{
					{MediaType: ocispec.MediaTypeImageLayerGzip, Data: lower}, {MediaType: ocispec.MediaTypeImageLayerZstd, Data: upper}}}))
			},
			kind: images.KindWasm, shape: images.ShapeWasmEntrypoint, module: hello, args0: "/bin/app.wasm", rootfsFile: "old.wasm",
		},
		{
			name: "plain image: layer without directory entries, entrypoint under a symlinked parent",
			build: func(t *testing.T) *images.MemoryImage {
				lower := rawTarBytes(rawEntry{name: "opt/real/m.wasm", data: hello})
				upper := rawTarBytes(rawEntry{name: "app", link: "/opt/real", symlink: true})
				return mi(t)(images.BuildImage(images.ImageSpec{Config: wasiConfig("/app/m.wasm"), Layers: []images.Layer{
					{MediaType: ocispec.MediaTypeImageLayer, Data: lower}, {MediaType: ocispec.MediaTypeImageLayer, Data: upper}}}))
			},
			kind: images.KindWasm, shape: images.ShapeWasmEntrypoint, module: hello, args0: "/app/m.wasm", rootfsFile: "opt/real/m.wasm",
		},
		{
			name: "config architecture wasm with an application/wasm layer",
			build: func(t *testing.T) *images.MemoryImage {
				cfg := ocispec.Image{Platform: ocispec.Platform{OS: "wasip1", Architecture: "wasm"}, Config: ocispec.ImageConfig{Entrypoint: []string{"app.wasm"}}}
				return mi(t)(images.BuildImage(images.ImageSpec{Config: cfg, Layers: []images.Layer{{MediaType: images.MediaTypeWasmLayer, Data: hello}}}))
			},
			kind: images.KindWasm, shape: images.ShapeWasmLayers, module: hello, args0: "app.wasm",
		},
		{
			name: "two component layers, the one titled like the entrypoint wins",
			build: func(t *testing.T) *images.MemoryImage {
				cfg := ocispec.Image{Platform: ocispec.Platform{OS: "wasip1", Architecture: "wasm"}, Config: ocispec.ImageConfig{Entrypoint: []string{"/b.wasm#greet"}}}
				return mi(t)(images.BuildImage(images.ImageSpec{Config: cfg, Layers: []images.Layer{
					{MediaType: images.MediaTypeWasmComponentLayer, Data: hello, Annotations: map[string]string{ocispec.AnnotationTitle: "a.wasm"}},
					{MediaType: images.MediaTypeWasmComponentLayer, Data: reactor, Annotations: map[string]string{ocispec.AnnotationTitle: "b.wasm"}}}}))
			},
			kind: images.KindWasm, shape: images.ShapeWasmLayers, module: reactor, function: "greet", args0: "/b.wasm#greet",
		},
		{
			name: "CNCF wasm artifact built by BuildWasmArtifact",
			build: func(t *testing.T) *images.MemoryImage {
				m, err := images.BuildWasmArtifact(ctx, hello, "hello.wasm", images.WithAnnotation(images.AnnotationHypervisor, "qemu"))
				return mustImage(t, m, err)
			},
			kind: images.KindWasm, shape: images.ShapeWasmArtifact, module: hello, args0: "hello.wasm", hypervisor: "qemu",
		},
		{
			name: "wasm-to-oci v1 artifact",
			build: func(t *testing.T) *images.MemoryImage {
				return mi(t)(images.BuildImage(images.ImageSpec{ConfigMediaType: images.MediaTypeWasmConfigV1, Config: map[string]any{},
					Layers: []images.Layer{{MediaType: images.MediaTypeWasmContentLayerV1, Data: hello}}}))
			},
			kind: images.KindWasm, shape: images.ShapeWasmToOCI, module: hello, args0: "module.wasm",
		},
		{
			name: "compat image: linux platform, variant annotation, wasm entrypoint",
			build: func(t *testing.T) *images.MemoryImage {
				m, err := images.BuildLinuxImage(ctx, []images.File{{Path: "/hello.wasm", Mode: 0o755, Data: hello}},
					ocispec.ImageConfig{Entrypoint: []string{"/hello.wasm"}}, ocispec.Platform{}, images.WithAnnotation(images.AnnotationWasmVariant, "compat"))
				return mustImage(t, m, err)
			},
			kind: images.KindWasm, shape: images.ShapeCompat, module: hello, args0: "/hello.wasm", rootfsFile: "hello.wasm",
		},
		{
			name: "compat-smart image whose entrypoint is a Linux binary is Linux",
			build: func(t *testing.T) *images.MemoryImage {
				m, err := images.BuildLinuxImage(ctx, []images.File{{Path: "/bin/app", Mode: 0o755, Data: []byte("\x7fELF not really")}},
					ocispec.ImageConfig{Entrypoint: []string{"/bin/app"}}, ocispec.Platform{}, images.WithAnnotation(images.AnnotationWasmVariant, "compat-smart"))
				return mustImage(t, m, err)
			},
			kind: images.KindLinux, shape: images.ShapeCompat, args0: "/bin/app", rootfsFile: "bin/app",
		},
		{
			name: "Linux busybox image asking for VM isolation",
			build: func(t *testing.T) *images.MemoryImage {
				files, err := images.BusyboxFiles("/bin/busybox")
				if err != nil {
					t.Fatal(err)
				}
				m, err := images.BuildLinuxImage(ctx, files, ocispec.ImageConfig{Entrypoint: []string{"sleep", "2147483647"}}, ocispec.Platform{},
					images.WithAnnotation(images.AnnotationIsolation, "vm"), images.WithAnnotation(images.AnnotationHypervisor, "qemu"))
				return mustImage(t, m, err)
			},
			kind: images.KindLinux, shape: images.ShapeLinux, args0: "sleep", rootfsFile: "bin/busybox", isolation: images.IsolationVM, hypervisor: "qemu",
		},
		{
			name: "multi-platform index: wasi/wasm is chosen over linux",
			build: func(t *testing.T) *images.MemoryImage {
				lin, err := images.BuildLinuxImage(ctx, []images.File{{Path: "/x", Mode: 0o644, Data: []byte("x")}}, ocispec.ImageConfig{Entrypoint: []string{"/x"}}, ocispec.Platform{})
				if err != nil {
					t.Fatal(err)
				}
				w, err := images.BuildWasmImage(ctx, hello, "hello.wasm")
				if err != nil {
					t.Fatal(err)
				}
				return mi(t)(images.BuildIndex(lin, w))
			},
			kind: images.KindWasm, shape: images.ShapeWasmEntrypoint, module: hello, args0: "/hello.wasm", rootfsFile: "hello.wasm",
		},
	}
}

func checkWorkload(t *testing.T, tc shapeCase, w *images.Workload) {
	t.Helper()
	if w.Metadata.Kind != tc.kind {
		t.Errorf("kind = %q, want %q", w.Metadata.Kind, tc.kind)
	}
	if w.Metadata.Isolation != tc.isolation || w.Metadata.Hypervisor != tc.hypervisor {
		t.Errorf("isolation/hypervisor = %q/%q, want %q/%q", w.Metadata.Isolation, w.Metadata.Hypervisor, tc.isolation, tc.hypervisor)
	}
	if !bytes.Equal(w.Module, tc.module) {
		t.Errorf("module: got %d bytes (digest %s), want %d bytes", len(w.Module), w.ModuleDigest, len(tc.module))
	}
	if tc.module != nil && w.ModuleDigest != digest.FromBytes(tc.module) {
		t.Errorf("module digest = %s", w.ModuleDigest)
	}
	if w.Function != tc.function {
		t.Errorf("function = %q, want %q", w.Function, tc.function)
	}
	if len(w.Args) == 0 || w.Args[0] != tc.args0 {
		t.Errorf("args = %q, want args[0] %q", w.Args, tc.args0)
	}
	if tc.rootfsFile == "" {
		if w.Rootfs != "" {
			t.Errorf("rootfs = %q, want none", w.Rootfs)
		}
	} else if _, err := os.Lstat(filepath.Join(w.Rootfs, tc.rootfsFile)); err != nil || w.Rootfs == "" {
		t.Errorf("rootfs %q lacks %s: %v", w.Rootfs, tc.rootfsFile, err)
	}
	if w.ManifestDigest == "" {
		t.Error("no manifest digest")
	}
}

// TestShapesThroughLayout resolves every image shape from an OCI layout
// directory and, separately, reads its module straight from the blobs (as
// the sandboxer does with containerd's content store).
func TestShapesThroughLayout(t *testing.T) {
	ctx := context.Background()
	for _, tc := range shapeCases() {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.build(t)
			dir := filepath.Join(t.TempDir(), "layout")
			if err := img.WriteLayout(dir, "example.com/shape:v1"); err != nil {
				t.Fatal(err)
			}
			s := openStore(t)
			w, err := s.Resolve(ctx, dir)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			checkWorkload(t, tc, w)
			e, err := s.Get(ctx, "example.com/shape:v1")
			if err != nil {
				t.Fatalf("layout image not named by its io.containerd.image.name: %v", err)
			}
			if e.Shape != tc.shape || e.Kind != tc.kind {
				t.Errorf("entry shape/kind = %s/%s, want %s/%s", e.Shape, e.Kind, tc.shape, tc.kind)
			}
			// Provider-only path (no rootfs), on the built image itself.
			md, err := images.MetadataFromImage(ctx, img, img.Root)
			if err != nil {
				t.Fatal(err)
			}
			if md.Kind != tc.kind {
				t.Errorf("MetadataFromImage kind = %s, want %s", md.Kind, tc.kind)
			}
			mod, err := images.ModuleFromImage(ctx, img, img.Root)
			if tc.kind == images.KindLinux {
				if !errors.Is(err, errdefs.ErrFailedPrecondition) {
					t.Errorf("ModuleFromImage on a Linux image: err = %v, want failed precondition", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ModuleFromImage: %v", err)
			}
			if !bytes.Equal(mod.Bytes, tc.module) || mod.Function != tc.function {
				t.Errorf("ModuleFromImage: %d bytes, function %q", len(mod.Bytes), mod.Function)
			}
		})
	}
}

// TestShapesThroughArchive resolves every shape from an OCI archive, by
// path and by PATH:NAME, and checks a re-resolve by name hits the store.
func TestShapesThroughArchive(t *testing.T) {
	ctx := context.Background()
	for _, tc := range shapeCases() {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.build(t)
			tarPath := filepath.Join(t.TempDir(), "image.tar")
			if err := img.WriteArchiveFile(tarPath, "example.com/shape:v2"); err != nil {
				t.Fatal(err)
			}
			s := openStore(t)
			for _, target := range []string{tarPath, tarPath + ":v2", tarPath + ":example.com/shape:v2", "example.com/shape:v2"} {
				w, err := s.Resolve(ctx, target)
				if err != nil {
					t.Fatalf("Resolve(%s): %v", target, err)
				}
				checkWorkload(t, tc, w)
			}
			if _, err := s.Resolve(ctx, tarPath+":nope"); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("unknown name in archive: err = %v, want not found", err)
			}
		})
	}
}

// TestBuildReproducible builds the same images twice and compares digests
// and archive bytes.
func TestBuildReproducible(t *testing.T) {
	ctx := context.Background()
	build := []func() (*images.MemoryImage, error){
		func() (*images.MemoryImage, error) { return images.BuildWasmImage(ctx, fixtures.Hello, "hello.wasm") },
		func() (*images.MemoryImage, error) {
			return images.BuildWasmArtifact(ctx, fixtures.Hello, "hello.wasm")
		},
	}
	for i, b := range build {
		a1, err := b()
		if err != nil {
			t.Fatal(err)
		}
		a2, _ := b()
		if a1.Root.Digest != a2.Root.Digest {
			t.Errorf("build %d: digests differ: %s vs %s", i, a1.Root.Digest, a2.Root.Digest)
		}
		var t1, t2 bytes.Buffer
		if err := a1.WriteArchive(&t1, "x:y"); err != nil {
			t.Fatal(err)
		}
		a2.WriteArchive(&t2, "x:y")
		if !bytes.Equal(t1.Bytes(), t2.Bytes()) {
			t.Errorf("build %d: archives differ", i)
		}
	}
}

func TestWasmFileAndTargets(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mod := write("no-extension", fixtures.Hello)
	trunc := write("truncated.wasm", fixtures.Truncated)
	notWasm := write("script.wasm", fixtures.NotWasm)
	plainDir := filepath.Join(dir, "plain")
	os.Mkdir(plainDir, 0o755)
	s := openStore(t)

	tests := []struct {
		target  string
		kind    images.SourceKind
		wantErr error
	}{
		{target: mod, kind: images.SourceWasmFile},
		// The store only checks the magic; rejecting the cut module is the engine's job.
		{target: trunc, kind: images.SourceWasmFile},
		{target: notWasm, wantErr: errdefs.ErrInvalidArgument},
		{target: plainDir, wantErr: errdefs.ErrInvalidArgument},
		{target: filepath.Join(dir, "missing.wasm"), wantErr: errdefs.ErrNotFound},
		{target: "UPPER/Case:bad", wantErr: errdefs.ErrInvalidArgument},
		{target: "ghcr.io/example/app:v1", kind: images.SourceRegistry},
	}
	for _, tc := range tests {
		t.Run(filepath.Base(tc.target), func(t *testing.T) {
			tg, err := images.ParseTarget(tc.target)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ParseTarget(%s) err = %v, want %v", tc.target, err, tc.wantErr)
				}
				if _, err := s.Resolve(ctx, tc.target); !errors.Is(err, tc.wantErr) {
					t.Fatalf("Resolve err = %v, want %v", err, tc.wantErr)
				}
				assertStoreEmpty(t, s)
				return
			}
			if err != nil || tg.Kind != tc.kind {
				t.Fatalf("ParseTarget = %+v, %v; want kind %s", tg, err, tc.kind)
			}
			if tc.kind == images.SourceWasmFile {
				w, err := s.Resolve(ctx, tc.target)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := os.ReadFile(tc.target)
				if !bytes.Equal(w.Module, want) || w.Args[0] != filepath.Base(tc.target) || w.Metadata.Kind != images.KindWasm {
					t.Errorf("workload = %+v", w)
				}
			}
		})
	}
	if tg, _ := images.ParseTarget("alpine"); tg.Ref != "docker.io/library/alpine:latest" {
		t.Errorf("alpine normalizes to %q", tg.Ref)
	}
}

// TestBadImagesLeaveNothing feeds malformed layouts and checks the error
// kind, its message and that the store stays empty.
func TestBadImagesLeaveNothing(t *testing.T) {
	ctx := context.Background()
	layer := func(files ...images.File) []images.Layer {
		return []images.Layer{{MediaType: ocispec.MediaTypeImageLayer, Data: tarLayer(t, files...)}}
	}
	rawLayer := func(entries ...rawEntry) []images.Layer {
		return []images.Layer{{MediaType: ocispec.MediaTypeImageLayer, Data: rawTar(t, entries...)}}
	}
	good := func(t *testing.T) *images.MemoryImage {
		m, err := images.BuildWasmImage(ctx, fixtures.Hello, "hello.wasm")
		return mustImage(t, m, err)
	}
	tests := []struct {
		name    string
		build   func(t *testing.T) *images.MemoryImage
		wantErr error
		// providerErr, when set, is what ModuleFromImage on the blobs must give.
		providerErr error
	}{
		{
			name: "manifest bytes do not match their digest",
			build: func(t *testing.T) *images.MemoryImage {
				m := good(t)
				b, _ := m.Blob(m.Root.Digest)
				m.SetBlob(m.Root.Digest, append([]byte(" "), b[1:]...))
				return m
			},
			wantErr: images.ErrDigestMismatch,
		},
		{
			name: "layer bytes do not match their digest",
			build: func(t *testing.T) *images.MemoryImage {
				m := good(t)
				man := manifestOf(t, m)
				b, _ := m.Blob(man.Layers[0].Digest)
				c := bytes.Clone(b)
				c[600] ^= 0xff
				m.SetBlob(man.Layers[0].Digest, c)
				return m
			},
			wantErr: images.ErrDigestMismatch,
		},
		{
			name: "entry name climbs out with ..",
			build: func(t *testing.T) *images.MemoryImage {
				return mi(t)(images.BuildImage(images.ImageSpec{Config: wasiConfig("/m.wasm"),
					Layers: rawLayer(rawEntry{name: "m.wasm", data: fixtures.Hello}, rawEntry{name: "../../evil", data: []byte("x")})}))
			},
			wantErr: images.ErrUnsafePath,
		},
		{
			name: "file written through a relative symlink that leaves the root",
			build: func(t *testing.T) *images.MemoryImage {
				return mi(t)(images.BuildImage(images.ImageSpec{Config: wasiConfig("/m.wasm"),
					Layers: rawLayer(rawEntry{name: "m.wasm", data: fixtures.Hello}, rawEntry{name: "etc", link: "../../../../etc", symlink: true}, rawEntry{name: "etc/evil", data: []byte("x")})}))
			},
			wantErr: images.ErrUnsafePath,
		},
		{
			name: "hardlink to a path outside the root",
			build: func(t *testing.T) *images.MemoryImage {
				return mi(t)(images.BuildImage(images.ImageSpec{Config: wasiConfig("/m.wasm"),
					Layers: rawLayer(rawEntry{name: "m.wasm", data: fixtures.Hello}, rawEntry{name: "passwd", link: "../../etc/passwd", hardlink: true})}))
			},
			wantErr: images.ErrUnsafePath,
		},
		{
			name: "wasm image whose entrypoint is not Wasm",
			build: func(t *testing.T) *images.MemoryImage {
				return mi(t)(images.BuildImage(images.ImageSpec{Config: wasiConfig("/m.wasm"), Layers: layer(images.File{Path: "/m.wasm", Mode: 0o644, Data: fixtures.NotWasm})}))
			},
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "wasm image whose entrypoint is missing",
			build: func(t *testing.T) *images.MemoryImage {
				return mi(t)(images.BuildImage(images.ImageSpec{Config: wasiConfig("/nope.wasm"), Layers: layer(images.File{Path: "/m.wasm", Mode: 0o644, Data: fixtures.Hello})}))
			},
			wantErr: errdefs.ErrNotFound,
		},
		{
			name: "entrypoint removed by a whiteout in an upper layer",
			build: func(t *testing.T) *images.MemoryImage {
				return mi(t)(images.BuildImage(images.ImageSpec{Config: wasiConfig("/app/m.wasm"), Layers: []images.Layer{
					layer(images.File{Path: "/app/m.wasm", Mode: 0o644, Data: fixtures.Hello})[0],
					layer(images.File{Path: "/app/.wh.m.wasm", Mode: 0o644})[0]}}))
			},
			wantErr:     errdefs.ErrNotFound,
			providerErr: errdefs.ErrNotFound,
		},
		{
			name: "entrypoint directory made opaque by an upper layer",
			build: func(t *testing.T) *images.MemoryImage {
				return mi(t)(images.BuildImage(images.ImageSpec{Config: wasiConfig("/app/m.wasm"), Layers: []images.Layer{
					layer(images.File{Path: "/app/m.wasm", Mode: 0o644, Data: fixtures.Hello})[0],
					layer(images.File{Path: "/app/.wh..wh..opq", Mode: 0o644}, images.File{Path: "/app/other", Mode: 0o644, Data: []byte("x")})[0]}}))
			},
			wantErr:     errdefs.ErrNotFound,
			providerErr: errdefs.ErrNotFound,
		},
		{
			name: "artifact without a wasm layer",
			build: func(t *testing.T) *images.MemoryImage {
				return mi(t)(images.BuildImage(images.ImageSpec{ConfigMediaType: images.MediaTypeWasmConfigV0, Config: map[string]any{}}))
			},
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "unknown isolation annotation",
			build: func(t *testing.T) *images.MemoryImage {
				m, err := images.BuildWasmImage(ctx, fixtures.Hello, "hello.wasm", images.WithAnnotation(images.AnnotationIsolation, "kvm"))
				return mustImage(t, m, err)
			},
			wantErr: errdefs.ErrInvalidArgument,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.build(t)
			dir := filepath.Join(t.TempDir(), "layout")
			if err := img.WriteLayout(dir, ""); err != nil {
				t.Fatal(err)
			}
			s := openStore(t)
			_, err := s.Resolve(ctx, dir)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			t.Logf("error: %v", err)
			assertStoreEmpty(t, s)
			if tc.providerErr != nil {
				if _, err := images.ModuleFromImage(ctx, img, img.Root); !errors.Is(err, tc.providerErr) {
					t.Errorf("ModuleFromImage err = %v, want %v", err, tc.providerErr)
				}
			}
			// The escape attempts must not have written outside either.
			if _, err := os.Stat(filepath.Join(filepath.Dir(s.Root()), "evil")); err == nil {
				t.Error("a file escaped the rootfs")
			}
		})
	}
}

func manifestOf(t testing.TB, m *images.MemoryImage) ocispec.Manifest {
	t.Helper()
	img, err := images.LoadImage(context.Background(), m, m.Root)
	if err != nil {
		t.Fatal(err)
	}
	return img.Manifest
}

func TestSelectPlatform(t *testing.T) {
	d := func(os, arch string) ocispec.Descriptor {
		return ocispec.Descriptor{Digest: digest.FromString(os + arch), Platform: &ocispec.Platform{OS: os, Architecture: arch}}
	}
	tests := []struct {
		name string
		in   []ocispec.Descriptor
		want string // os/arch, "" = error
	}{
		{"wasi first", []ocispec.Descriptor{d("linux", runtime.GOARCH), d("wasip1", "wasm"), d("wasi", "wasm")}, "wasi/wasm"},
		{"wasip1 next", []ocispec.Descriptor{d("linux", runtime.GOARCH), d("wasip1", "wasm")}, "wasip1/wasm"},
		{"linux host arch", []ocispec.Descriptor{d("linux", "s390x"), d("linux", runtime.GOARCH)}, "linux/" + runtime.GOARCH},
		{"single entry", []ocispec.Descriptor{d("linux", "s390x")}, "linux/s390x"},
		{"nothing fits", []ocispec.Descriptor{d("linux", "s390x"), d("windows", "arm64")}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := images.SelectPlatform(tc.in)
			if tc.want == "" {
				if !errors.Is(err, errdefs.ErrNotFound) {
					t.Fatalf("err = %v, want not found", err)
				}
				return
			}
			if err != nil || got.Platform.OS+"/"+got.Platform.Architecture != tc.want {
				t.Fatalf("got %+v, %v; want %s", got.Platform, err, tc.want)
			}
		})
	}
}

// TestStoreListsWhatItHolds checks names, kinds and sizes after imports.
func TestStoreListsWhatItHolds(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	for _, tc := range shapeCases()[:3] {
		img := tc.build(t)
		p := filepath.Join(t.TempDir(), "i.tar")
		if err := img.WriteArchiveFile(p, "example.com/"+string(rune('a'+len(tc.name)%26))+":1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Resolve(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) == 0 || !slices.IsSortedFunc(list, func(a, b images.Entry) int { return cmpString(a.Name, b.Name) }) {
		t.Fatalf("list = %+v", list)
	}
	for _, e := range list {
		if e.Size <= e.Manifest.Size || e.Kind != images.KindWasm {
			t.Errorf("entry %+v", e)
		}
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// mi unwraps a (*MemoryImage, error) pair, failing the test on error.
func mi(t *testing.T) func(*images.MemoryImage, error) *images.MemoryImage {
	return func(m *images.MemoryImage, err error) *images.MemoryImage { return mustImage(t, m, err) }
}

func gzipBytes(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdBytes(t *testing.T, b []byte) []byte {
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

// TestRemove checks that removing names frees exactly what no other name uses.
func TestRemove(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	dir := filepath.Join(t.TempDir(), "layout")
	wasmImg, err := images.BuildWasmImage(ctx, fixtures.Hello, "hello.wasm")
	if err != nil {
		t.Fatal(err)
	}
	art, err := images.BuildWasmArtifact(ctx, fixtures.Hello, "hello.wasm")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"example.com/a:1", "example.com/a:alias"} {
		if err := wasmImg.WriteLayout(dir, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := art.WriteLayout(dir, "example.com/art:1"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"example.com/a:1", "example.com/a:alias", "example.com/art:1"} {
		if _, err := s.Resolve(ctx, dir+":"+n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Resolve(ctx, dir); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "example.com/art:1") {
		t.Errorf("ambiguous layout: err = %v, want a list of the names", err)
	}
	if err := s.Remove(ctx, "example.com/nope:1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("remove unknown: %v", err)
	}
	if err := s.Remove(ctx, "example.com/a:1", "example.com/art:1"); err != nil {
		t.Fatal(err)
	}
	w, err := s.Resolve(ctx, "example.com/a:alias")
	if err != nil {
		t.Fatalf("alias lost its content: %v", err)
	}
	if !bytes.Equal(w.Module, fixtures.Hello) {
		t.Error("alias module differs")
	}
	if blobs, _ := os.ReadDir(filepath.Join(s.Root(), "blobs", "sha256")); len(blobs) != 3 {
		t.Errorf("%d blobs left, want the alias's 3", len(blobs))
	}
	if err := s.Remove(ctx, "example.com/a:alias"); err != nil {
		t.Fatal(err)
	}
	assertStoreEmpty(t, s)
}
