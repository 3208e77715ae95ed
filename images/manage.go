package images

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Removed is what RemoveImages or Prune took out of the store, for the CLI
// to say so.
type Removed struct {
	// Images are the names removed from the index.
	Images []string `json:"images"`
	// Blobs are the blobs deleted because no remaining image uses them.
	Blobs []digest.Digest `json:"blobs"`
	// Rootfs are the manifests whose unpacked rootfs trees were deleted.
	Rootfs []string `json:"rootfs"`
	// Bytes is the size of the deleted blobs.
	Bytes int64 `json:"bytes"`
}

// RemoveImages is Remove, reporting what it removed.
func (s *Store) RemoveImages(ctx context.Context, names ...string) (Removed, error) {
	unlock, err := s.lock(ctx)
	if err != nil {
		return Removed{}, err
	}
	defer unlock()
	idx, err := s.readIndex()
	if err != nil {
		return Removed{}, err
	}
	var gone []string
	for _, n := range names {
		e, ok := lookup(idx, n)
		if !ok {
			return Removed{}, fmt.Errorf("image %q is not in the store (see kuasar images): %w", n, errdefs.ErrNotFound)
		}
		gone = append(gone, e.Name)
	}
	idx.Images = slices.DeleteFunc(idx.Images, func(e Entry) bool { return slices.Contains(gone, e.Name) })
	if err := s.writeIndex(idx); err != nil {
		return Removed{}, err
	}
	r, err := s.collect(ctx, idx)
	r.Images = slices.Compact(slices.Sorted(slices.Values(gone)))
	return r, err
}

// Prune deletes the blobs and rootfs trees no image uses (left by a crash,
// or by an older kuasar); with all, it removes every image first.
func (s *Store) Prune(ctx context.Context, all bool) (Removed, error) {
	if all {
		list, err := s.List(ctx)
		if err != nil {
			return Removed{}, err
		}
		names := make([]string, 0, len(list))
		for _, e := range list {
			names = append(names, e.Name)
		}
		return s.RemoveImages(ctx, names...)
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return Removed{}, err
	}
	defer unlock()
	idx, err := s.readIndex()
	if err != nil {
		return Removed{}, err
	}
	return s.collect(ctx, idx)
}

// Tag names the image src (as listed, or a reference) also as dst, a
// registry reference normalized as docker does; an image already named dst
// is renamed away from. It returns the new entry.
func (s *Store) Tag(ctx context.Context, src, dst string) (Entry, error) {
	named, err := reference.ParseDockerRef(dst)
	if err != nil {
		return Entry{}, fmt.Errorf("image reference %q: %w: %w", dst, err, errdefs.ErrInvalidArgument)
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return Entry{}, err
	}
	defer unlock()
	idx, err := s.readIndex()
	if err != nil {
		return Entry{}, err
	}
	e, ok := lookup(idx, src)
	if !ok {
		return Entry{}, fmt.Errorf("image %q is not in the store (see kuasar images): %w", src, errdefs.ErrNotFound)
	}
	e.Name = named.String()
	idx.Images = slices.DeleteFunc(idx.Images, func(x Entry) bool { return x.Name == e.Name })
	idx.Images = append(idx.Images, e)
	// The old image of that name may have been the last user of its blobs.
	if err := s.writeIndex(idx); err != nil {
		return Entry{}, err
	}
	if _, err := s.collect(ctx, idx); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// Push uploads the image name (as listed, or a reference) to the registry
// as ref (name itself when ref is ""): its config and layers, then its
// manifest, tagged. The store keeps one platform's manifest of a
// multi-platform image, so that is what is pushed.
func (s *Store) Push(ctx context.Context, name, ref string, opts ...Option) (ocispec.Descriptor, error) {
	o := newOptions(opts)
	idx, err := s.readIndex()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	e, ok := lookup(idx, name)
	if !ok {
		return ocispec.Descriptor{}, fmt.Errorf("image %q is not in the store (see kuasar images): %w", name, errdefs.ErrNotFound)
	}
	if ref == "" {
		ref = e.Name
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("image reference %q: %w: give a registry reference such as ghcr.io/org/app:v1: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	repo, tag, err := newRepository(named, o)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	mb, err := readVerified(ctx, s, e.Manifest, maxJSONBlob)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var m ocispec.Manifest
	if err := readJSON(ctx, s, e.Manifest, &m); err != nil {
		return ocispec.Descriptor{}, err
	}
	for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		if ok, err := repo.Exists(ctx, d); err == nil && ok {
			continue
		}
		p, err := s.blobPath(d.Digest)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		f, err := os.Open(p)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("blob %s of %s is missing from the store (%w): pull the image again: %w", d.Digest, e.Name, err, errdefs.ErrDataLoss)
		}
		err = repo.Push(ctx, d, f)
		f.Close()
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("push %s to %s: %w", d.Digest, named, registryError(err))
		}
	}
	root := e.Manifest
	root.Platform = nil
	if err := repo.PushReference(ctx, root, bytes.NewReader(mb), tag); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push %s: %w", named, registryError(err))
	}
	return root, nil
}

// lookup finds name in idx as listed, else as a normalized reference
// (busybox finds docker.io/library/busybox:latest).
func lookup(idx *indexFile, name string) (Entry, bool) {
	find := func(n string) (Entry, bool) {
		i := slices.IndexFunc(idx.Images, func(e Entry) bool { return e.Name == n })
		if i < 0 {
			return Entry{}, false
		}
		return idx.Images[i], true
	}
	if e, ok := find(name); ok {
		return e, true
	}
	if named, err := reference.ParseDockerRef(name); err == nil {
		return find(named.String())
	}
	return Entry{}, false
}

// collect deletes blobs and rootfs trees no entry of idx uses and reports
// them; the caller holds the lock. A blob of an entry that cannot be read
// keeps everything (safe).
func (s *Store) collect(ctx context.Context, idx *indexFile) (Removed, error) {
	r := Removed{Images: []string{}, Blobs: []digest.Digest{}, Rootfs: []string{}}
	keep := map[string]bool{}
	keepRootfs := map[string]bool{}
	for _, e := range idx.Images {
		keep[e.Target.Digest.Encoded()] = true
		keep[e.Manifest.Digest.Encoded()] = true
		keepRootfs[e.Manifest.Digest.Encoded()] = true
		var m ocispec.Manifest
		if err := readJSON(ctx, s, e.Manifest, &m); err != nil {
			return r, fmt.Errorf("image %s is unreadable, not collecting garbage: %w", e.Name, err)
		}
		keep[m.Config.Digest.Encoded()] = true
		for _, l := range m.Layers {
			keep[l.Digest.Encoded()] = true
		}
	}
	blobDir := filepath.Join(s.root, "blobs", "sha256")
	ents, err := os.ReadDir(blobDir)
	if err != nil {
		return r, err
	}
	for _, b := range ents {
		if keep[b.Name()] {
			continue
		}
		var size int64
		if fi, err := b.Info(); err == nil {
			size = fi.Size()
		}
		if err := os.Remove(filepath.Join(blobDir, b.Name())); err != nil {
			return r, err
		}
		r.Blobs = append(r.Blobs, digest.NewDigestFromEncoded(digest.SHA256, b.Name()))
		r.Bytes += size
	}
	rootfsDir := filepath.Join(s.root, "rootfs")
	ents, err = os.ReadDir(rootfsDir)
	if err != nil {
		return r, err
	}
	for _, d := range ents {
		if keepRootfs[d.Name()] {
			continue
		}
		if err := removeTree(filepath.Join(rootfsDir, d.Name())); err != nil {
			return r, err
		}
		r.Rootfs = append(r.Rootfs, digest.NewDigestFromEncoded(digest.SHA256, d.Name()).String())
	}
	return r, nil
}

// Inspection is an image's store entry with its manifest and config, as
// `kuasar image inspect` shows them.
type Inspection struct {
	Entry
	// ManifestContent is the image's manifest (config and layers).
	ManifestContent ocispec.Manifest `json:"manifest_content"`
	// Config is the image's config blob as stored: an OCI image config, or
	// a Wasm artifact's config.
	Config json.RawMessage `json:"config"`
	// RootfsPath is where the unpacked layers are, when the image has any.
	RootfsPath string `json:"rootfs_path,omitempty"`
}

// Inspect returns the image name (as listed, or a reference) with its
// manifest and config, each verified against its digest.
func (s *Store) Inspect(ctx context.Context, name string) (Inspection, error) {
	idx, err := s.readIndex()
	if err != nil {
		return Inspection{}, err
	}
	e, ok := lookup(idx, name)
	if !ok {
		return Inspection{}, fmt.Errorf("image %q is not in the store (see kuasar images): %w", name, errdefs.ErrNotFound)
	}
	in := Inspection{Entry: e}
	if err := readJSON(ctx, s, e.Manifest, &in.ManifestContent); err != nil {
		return Inspection{}, err
	}
	cfg, err := readVerified(ctx, s, in.ManifestContent.Config, maxJSONBlob)
	if err != nil {
		return Inspection{}, err
	}
	if json.Valid(cfg) {
		in.Config = cfg
	} else {
		in.Config = json.RawMessage("null")
	}
	if e.Rootfs {
		in.RootfsPath = s.RootfsPath(e.Manifest.Digest)
	}
	return in, nil
}
