package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/kuasar-go/kuasar/internal/atomicfile"
	"github.com/kuasar-go/kuasar/internal/fsroot"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"
	"golang.org/x/sys/unix"
)

// Store is a local content-addressed image store under one directory:
//
//	blobs/sha256/<hex>   every blob, digest-verified on write and on use
//	rootfs/<hex>/        the unpacked tar layers of manifest <hex>
//	index.json           image names -> manifest, replaced atomically
//	ingest/pull-*/       per-pull staging, removed on success or failure;
//	                     flock(2)ed by its pull, so the staging of a pull
//	                     that died is told apart and removed by OpenStore
//	lock                 flock(2) serialising commits across processes
//
// A pull stages every blob it fetches and the unpacked rootfs under ingest/,
// and only when all of them verified does it move them into place and name
// the image, so a failed pull leaves nothing behind. Concurrent pulls of the
// same name in one process share one download; across processes, renames
// are atomic and the index update holds the lock.
type Store struct {
	root  string
	group singleflight.Group
}

// Entry is one named image in the store.
type Entry struct {
	// Name is the normalized reference (registry/repo:tag), or the source
	// path for unnamed layouts and archives.
	Name string `json:"name"`
	// Target is the descriptor the name resolved to at pull time (a manifest
	// or an index).
	Target ocispec.Descriptor `json:"target"`
	// Manifest is the manifest chosen for this platform.
	Manifest ocispec.Descriptor `json:"manifest"`
	// Kind says whether the image is Wasm or Linux.
	Kind Kind `json:"kind"`
	// Shape says which image layout it uses.
	Shape Shape `json:"shape"`
	// Size is the total size of the manifest, config and layers in bytes.
	Size int64 `json:"size"`
	// Rootfs reports whether the image has tar layers unpacked under
	// rootfs/<manifest hex>.
	Rootfs bool `json:"rootfs"`
	// Pulled is when the entry was last written.
	Pulled time.Time `json:"pulled"`
}

type indexFile struct {
	Version int     `json:"version"`
	Images  []Entry `json:"images"`
}

// OpenStore opens (creating if needed) the store rooted at root. Directories
// are created 0700: the store may hold images pulled with credentials.
func OpenStore(root string) (*Store, error) {
	if root == "" {
		return nil, fmt.Errorf("image store root is empty: set a state directory: %w", errdefs.ErrInvalidArgument)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{abs, filepath.Join(abs, "blobs", "sha256"), filepath.Join(abs, "rootfs"), filepath.Join(abs, "ingest")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create image store directory: %w", err)
		}
	}
	s := &Store{root: abs}
	s.cleanDeadIngest(context.Background())
	return s, nil
}

// cleanDeadIngest removes the staging directories of pulls that died
// (killed, crashed, machine reset) before they could clean up. A live pull
// holds flock(2) on its staging directory for as long as it runs, in this
// process or another, and the kernel drops the lock when the process dies,
// so a directory whose lock can be taken belongs to no live pull. It is
// removed while the lock is held, so no new pull can adopt it.
func (s *Store) cleanDeadIngest(ctx context.Context) {
	dir := filepath.Join(s.root, "ingest")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if !e.IsDir() {
				os.Remove(p) // not ours: nothing but staging directories live here
			}
			continue
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			unix.Close(fd) // a live pull's staging
			continue
		}
		if err := removeTree(p); err != nil {
			log.G(ctx).WithError(err).Warnf("image store: remove the staging %s of a dead pull", p)
		} else {
			log.G(ctx).Infof("image store: removed the staging %s of a dead pull", p)
		}
		unix.Close(fd)
	}
}

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

func (s *Store) blobPath(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("digest %q: %w: %w", d, err, errdefs.ErrInvalidArgument)
	}
	return filepath.Join(s.root, "blobs", d.Algorithm().String(), d.Encoded()), nil
}

// RootfsPath returns where the rootfs of manifest m is (or would be) unpacked.
func (s *Store) RootfsPath(m digest.Digest) string {
	return filepath.Join(s.root, "rootfs", m.Encoded())
}

// fileReaderAt is a content.ReaderAt over an open file.
type fileReaderAt struct {
	*os.File
	size int64
}

func (f fileReaderAt) Size() int64 { return f.size }

// ReaderAt opens a blob of the store. The bytes are as stored; every reader
// in this package verifies them against desc while reading, and external
// callers should do the same (ModuleFromImage does).
func (s *Store) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	p, err := s.blobPath(desc.Digest)
	if err != nil {
		return nil, err
	}
	return openBlobFile(p, desc)
}

func openBlobFile(p string, desc ocispec.Descriptor) (content.ReaderAt, error) {
	f, err := os.Open(p)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("blob %s: %w", desc.Digest, errdefs.ErrNotFound)
		}
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return fileReaderAt{f, st.Size()}, nil
}

func (s *Store) hasBlob(d digest.Digest) bool {
	p, err := s.blobPath(d)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// List returns the named images, sorted by name.
func (s *Store) List(ctx context.Context) ([]Entry, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	return idx.Images, nil
}

// Get returns the entry for name (a normalized reference or a name as
// listed).
func (s *Store) Get(ctx context.Context, name string) (Entry, error) {
	idx, err := s.readIndex()
	if err != nil {
		return Entry{}, err
	}
	for _, e := range idx.Images {
		if e.Name == name {
			return e, nil
		}
	}
	return Entry{}, fmt.Errorf("image %q is not in the store %s: pull it first (kuasar pull): %w", name, s.root, errdefs.ErrNotFound)
}

func (s *Store) readIndex() (*indexFile, error) {
	b, err := os.ReadFile(filepath.Join(s.root, "index.json"))
	if errors.Is(err, os.ErrNotExist) {
		return &indexFile{Version: 1}, nil
	}
	if err != nil {
		return nil, err
	}
	var idx indexFile
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("image store index %s is corrupt (%w): remove it and pull again: %w", filepath.Join(s.root, "index.json"), err, errdefs.ErrDataLoss)
	}
	return &idx, nil
}

// writeIndex replaces index.json atomically (temp file, fsync, rename).
func (s *Store) writeIndex(idx *indexFile) error {
	slices.SortFunc(idx.Images, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(s.root, "index.json"), b, 0o600, true)
}

// lock takes the store's cross-process lock; the returned func releases it.
func (s *Store) lock(ctx context.Context) (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.root, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock image store: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for the image store lock %s: %w", filepath.Join(s.root, "lock"), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// fetcher reads blobs from an image source (a registry repository, an OCI
// layout, an OCI archive). oras-go's remote.Repository satisfies it.
type fetcher interface {
	// Fetch opens the blob desc names; the store verifies what it reads.
	Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
}

// txn is one pull: blobs and the rootfs are staged under ingest/ and moved
// into the store by commit, or removed by abort.
type txn struct {
	s        *Store
	dir      string
	lockFD   int // flock(2) held on dir while the pull lives
	src      fetcher
	staged   map[digest.Digest]string
	progress *progress
}

func (s *Store) newTxn(src fetcher, pr *progress) (*txn, error) {
	for try := 0; ; try++ {
		if try == 100 {
			return nil, fmt.Errorf("staging directories under %s keep disappearing before they can be locked: is another program deleting them? %w", filepath.Join(s.root, "ingest"), errdefs.ErrUnavailable)
		}
		dir, err := os.MkdirTemp(filepath.Join(s.root, "ingest"), "pull-")
		if err != nil {
			return nil, err
		}
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT {
			continue // taken for a dead pull's by a store opening meanwhile
		}
		if err != nil {
			os.Remove(dir)
			return nil, fmt.Errorf("open staging directory %s: %w", dir, err)
		}
		if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
			unix.Close(fd)
			os.Remove(dir)
			return nil, fmt.Errorf("lock staging directory %s: %w", dir, err)
		}
		// Between MkdirTemp and Flock, a store opening elsewhere may have
		// taken the new directory for a dead pull's and removed it: then
		// start again with another.
		var st, byName unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Nlink == 0 || unix.Lstat(dir, &byName) != nil || byName.Ino != st.Ino || byName.Dev != st.Dev {
			unix.Close(fd)
			continue
		}
		return &txn{s: s, dir: dir, lockFD: fd, src: src, staged: map[digest.Digest]string{}, progress: pr}, nil
	}
}

// abort removes the staging directory, then drops its lock.
func (t *txn) abort() {
	if err := removeTree(t.dir); err != nil {
		log.L.WithError(err).Warnf("image store: remove staging %s", t.dir)
	}
	unix.Close(t.lockFD)
}

// removeTree removes the directory tree p without following any symlink
// in it (fsroot.RemoveAll, from p's parent directory fd).
func removeTree(p string) error {
	r, err := fsroot.Open(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer r.Close()
	return r.RemoveAll(filepath.Base(p))
}

// ReaderAt serves staged blobs, then store blobs, and fetches (verified)
// from the source what neither has.
func (t *txn) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	if err := t.fetch(ctx, desc); err != nil {
		return nil, err
	}
	if p, ok := t.staged[desc.Digest]; ok {
		return openBlobFile(p, desc)
	}
	return t.s.ReaderAt(ctx, desc)
}

// fetch stages desc unless the store or this pull already has it. The blob
// is written to a temp file through a verifier and kept only if it matched.
func (t *txn) fetch(ctx context.Context, desc ocispec.Descriptor) error {
	if _, ok := t.staged[desc.Digest]; ok {
		return nil
	}
	if t.s.hasBlob(desc.Digest) {
		return nil
	}
	if _, err := t.s.blobPath(desc.Digest); err != nil {
		return err
	}
	rc, err := t.src.Fetch(ctx, desc)
	if err != nil {
		return fmt.Errorf("fetch %s (%s): %w", desc.Digest, desc.MediaType, err)
	}
	defer rc.Close()
	v, err := newVerifier(rc, desc)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(t.dir, "blob-")
	if err != nil {
		return err
	}
	var r io.Reader = v
	if t.progress != nil {
		r = t.progress.reader(v, desc)
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if t.progress != nil {
		t.progress.done(desc, err)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("fetch %s (%s): %w", desc.Digest, desc.MediaType, err)
	}
	t.staged[desc.Digest] = f.Name()
	return nil
}

// commit moves the staged blobs and rootfs into the store and names the
// image, under the store lock. Blobs and rootfs another pull committed
// first are kept (they are the same content).
func (t *txn) commit(ctx context.Context, e Entry, rootfsTmp string, uses []digest.Digest) error {
	unlock, err := t.s.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	// Blobs and the rootfs this pull found already present may have been
	// removed since (kuasar image rm); commit only a complete image.
	for _, d := range uses {
		if _, ok := t.staged[d]; !ok && !t.s.hasBlob(d) {
			return fmt.Errorf("blob %s was removed from the store during the pull: pull again: %w", d, errdefs.ErrUnavailable)
		}
	}
	if e.Rootfs && rootfsTmp == "" {
		if _, err := os.Stat(t.s.RootfsPath(e.Manifest.Digest)); err != nil {
			return fmt.Errorf("rootfs of %s was removed from the store during the pull: pull again: %w", e.Name, errdefs.ErrUnavailable)
		}
	}
	for d, p := range t.staged {
		dst, _ := t.s.blobPath(d)
		if err := os.Chmod(p, 0o400); err != nil {
			return err
		}
		if err := os.Rename(p, dst); err != nil {
			return fmt.Errorf("commit blob %s: %w", d, err)
		}
	}
	if rootfsTmp != "" {
		dst := t.s.RootfsPath(e.Manifest.Digest)
		if _, err := os.Stat(dst); err != nil {
			if err := os.Rename(rootfsTmp, dst); err != nil {
				return fmt.Errorf("commit rootfs: %w", err)
			}
		}
	}
	idx, err := t.s.readIndex()
	if err != nil {
		return err
	}
	e.Pulled = time.Now().UTC()
	idx.Images = slices.DeleteFunc(idx.Images, func(x Entry) bool { return x.Name == e.Name })
	idx.Images = append(idx.Images, e)
	return t.s.writeIndex(idx)
}

// Remove drops the named images from the store, then deletes every blob and
// rootfs tree that no remaining image uses. Unknown names are an error and
// nothing is removed. RemoveImages says what went.
func (s *Store) Remove(ctx context.Context, names ...string) error {
	_, err := s.RemoveImages(ctx, names...)
	return err
}
