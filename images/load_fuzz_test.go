package images

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Placeholders a fuzzed index or manifest may hold: they are replaced by the
// digest and size of the blob below it, so that mutations explore parsing
// and not only digest mismatches.
const (
	fuzzManifestDigest = "@MANIFEST_DIGEST@"
	fuzzManifestSize   = "@MANIFEST_SIZE@"
	fuzzConfigDigest   = "@CONFIG_DIGEST@"
	fuzzConfigSize     = "@CONFIG_SIZE@"
)

// FuzzLoadImage feeds hostile index, manifest and config JSON to loadImage
// and detect, the parsing every pulled or containerd-held image goes
// through before anything runs. Properties: no panic; a failure carries an
// errdefs kind (InvalidArgument, NotFound, NotImplemented or ResourceExhausted: what the
// caller maps to a clear message); a success has a known shape, the config
// it read is the blob the manifest names, and detect's metadata has a known
// kind and an isolation ParseIsolation accepts.
func FuzzLoadImage(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"@MANIFEST_DIGEST@","size":@MANIFEST_SIZE@,"platform":{"os":"wasi","architecture":"wasm"}}]}`),
		[]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.wasm.config.v0+json","digest":"@CONFIG_DIGEST@","size":@CONFIG_SIZE@},"layers":[{"mediaType":"application/wasm","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":8}]}`),
		[]byte(`{}`), true)
	f.Add([]byte(nil),
		[]byte(`{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"@CONFIG_DIGEST@","size":@CONFIG_SIZE@},"layers":[],"annotations":{"kuasar.io/isolation":"vm"}}`),
		[]byte(`{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sh"],"Labels":{"kuasar.io/hypervisor":"qemu"}}}`), false)
	f.Fuzz(func(t *testing.T, index, manifest, config []byte, useIndex bool) {
		ctx := context.Background()
		m := newMemoryImage()
		cd := m.add(ocispec.MediaTypeImageConfig, config)
		manifest = bytes.ReplaceAll(manifest, []byte(fuzzConfigDigest), []byte(cd.Digest))
		manifest = bytes.ReplaceAll(manifest, []byte(fuzzConfigSize), []byte(strconv.FormatInt(cd.Size, 10)))
		root := m.add(ocispec.MediaTypeImageManifest, manifest)
		if useIndex {
			index = bytes.ReplaceAll(index, []byte(fuzzManifestDigest), []byte(root.Digest))
			index = bytes.ReplaceAll(index, []byte(fuzzManifestSize), []byte(strconv.FormatInt(root.Size, 10)))
			root = m.add(ocispec.MediaTypeImageIndex, index)
		}
		img, err := loadImage(ctx, m, root)
		if err != nil {
			checkKind(t, "loadImage", err)
			return
		}
		known := []Shape{ShapeWasmEntrypoint, ShapeWasmLayers, ShapeWasmArtifact, ShapeWasmToOCI, ShapeCompat, ShapeLinux}
		if !slices.Contains(known, img.Shape) {
			t.Fatalf("unknown shape %q", img.Shape)
		}
		if _, ok := m.Blob(img.Manifest.Config.Digest); !ok {
			t.Fatalf("loaded an image whose config %s is not in the store", img.Manifest.Config.Digest)
		}
		if img.Shape != classify(img) {
			t.Fatalf("classify is not stable: %q then %q", img.Shape, classify(img))
		}
		md, err := detect(ctx, m, img)
		if err != nil {
			checkKind(t, "detect", err)
			return
		}
		if md.Kind != KindWasm && md.Kind != KindLinux {
			t.Fatalf("metadata kind %q", md.Kind)
		}
		if iso, err := ParseIsolation(string(md.Isolation)); err != nil || iso != md.Isolation {
			t.Fatalf("metadata isolation %q does not parse back: %v", md.Isolation, err)
		}
	})
}

// FuzzParseIsolation: what ParseIsolation accepts parses back to itself, and
// what it refuses is an InvalidArgument error.
func FuzzParseIsolation(f *testing.F) {
	for _, s := range []string{"", "auto", "wasm", "vm", "quark", "VM", "wasm "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		iso, err := ParseIsolation(s)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("ParseIsolation(%q): %v is not InvalidArgument", s, err)
			}
			return
		}
		if again, err := ParseIsolation(string(iso)); err != nil || again != iso {
			t.Fatalf("ParseIsolation(%q) = %q, which parses to %q, %v", s, iso, again, err)
		}
	})
}

// FuzzSelectPlatform: the manifest chosen from an index is one of its
// entries, and a failure is NotFound.
func FuzzSelectPlatform(f *testing.F) {
	f.Add("wasi", "wasm", "linux", "amd64", true)
	f.Add("linux", "arm64", "", "", false)
	f.Fuzz(func(t *testing.T, os1, arch1, os2, arch2 string, second bool) {
		ms := []ocispec.Descriptor{{Digest: "sha256:1", Platform: &ocispec.Platform{OS: os1, Architecture: arch1}}}
		if second {
			ms = append(ms, ocispec.Descriptor{Digest: "sha256:2", Platform: &ocispec.Platform{OS: os2, Architecture: arch2}})
		}
		d, err := selectPlatform(ms)
		if err != nil {
			if !errdefs.IsNotFound(err) {
				t.Fatalf("selectPlatform: %v is not NotFound", err)
			}
			return
		}
		if !slices.ContainsFunc(ms, func(m ocispec.Descriptor) bool { return m.Digest == d.Digest }) {
			t.Fatalf("chose %s, not an entry of the index", d.Digest)
		}
	})
}

// checkKind fails unless err carries one of the errdefs kinds image parsing
// reports.
func checkKind(t *testing.T, what string, err error) {
	t.Helper()
	if errdefs.IsInvalidArgument(err) || errdefs.IsNotFound(err) || errdefs.IsNotImplemented(err) || errdefs.IsFailedPrecondition(err) || errdefs.IsResourceExhausted(err) {
		return
	}
	t.Fatalf("%s: error %v carries no errdefs kind", what, err)
}
