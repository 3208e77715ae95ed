package images_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/kuasar-go/kuasar/images"
)

// TestPruneCollectsOrphans leaves a blob and a rootfs tree no image uses (as
// a crash between writes could) and checks that Prune deletes and reports
// exactly those, and that a second Prune finds nothing.
func TestPruneCollectsOrphans(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := images.OpenStore(root)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("orphan blob")
	d := digest.FromBytes(data)
	if err := os.WriteFile(filepath.Join(root, "blobs", "sha256", d.Encoded()), data, 0o400); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(root, "rootfs", d.Encoded(), "etc")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := s.Prune(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Blobs, []digest.Digest{d}) || !slices.Equal(r.Rootfs, []string{d.String()}) || r.Bytes != int64(len(data)) || len(r.Images) != 0 {
		t.Errorf("Prune = %+v; want blob and rootfs %s, %d bytes, no images", r, d, len(data))
	}
	for _, p := range []string{filepath.Join(root, "blobs", "sha256", d.Encoded()), filepath.Join(root, "rootfs", d.Encoded())} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s after Prune: %v; want it gone", p, err)
		}
	}
	if r, err := s.Prune(ctx, false); err != nil || len(r.Blobs)+len(r.Rootfs) != 0 {
		t.Errorf("second Prune = %+v, %v; want nothing", r, err)
	}
	// Unknown names are NotFound for every command that takes one.
	if _, err := s.Tag(ctx, "nope:v1", "example.com/x:v1"); !errdefs.IsNotFound(err) {
		t.Errorf("Tag of a missing image: %v; want NotFound", err)
	}
	if _, err := s.Inspect(ctx, "nope:v1"); !errdefs.IsNotFound(err) {
		t.Errorf("Inspect of a missing image: %v; want NotFound", err)
	}
	if _, err := s.RemoveImages(ctx, "nope:v1"); !errdefs.IsNotFound(err) {
		t.Errorf("RemoveImages of a missing image: %v; want NotFound", err)
	}
}
