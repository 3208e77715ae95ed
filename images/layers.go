package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/fsroot"
)

// Whiteout markers of the OCI layer format.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// ErrUnsafePath is wrapped by errors about layer entries that would escape
// the image root ("..", or a symlink pointing outside it).
var ErrUnsafePath = fmt.Errorf("layer entry escapes the image root (the image is malformed or malicious; rebuild it without such paths): %w", errdefs.ErrInvalidArgument)

// decompress detects gzip and zstd by their magic numbers (media types lie
// too often) and returns the plain tar stream of layer. zstd windows are
// capped at maxZstdWindow.
func decompress(r io.Reader, layer digest.Digest) (io.ReadCloser, error) {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(4)
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, streamError("gzip layer", err)
		}
		return zr, nil
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstdReader(br)
		if err != nil {
			return nil, streamError("zstd layer", err)
		}
		return zstdLimitReader{d: zr, layer: layer}, nil
	}
	return io.NopCloser(br), nil
}

// streamError wraps an error from reading a layer stream. An error that
// carries its own kind comes from the source below (a registry timeout, a
// limit, a cancelled pull) and keeps it; anything else is the stream's
// fault: ErrInvalidArgument.
func streamError(what string, err error) error {
	if hasKind(err) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w: %w", what, err, errdefs.ErrInvalidArgument)
}

// cleanEntry turns a tar entry name into a clean root-relative path, refusing
// names that climb out of the root.
func cleanEntry(name string) (string, error) {
	c := path.Clean(strings.TrimLeft(name, "/"))
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("entry %q: %w", name, ErrUnsafePath)
	}
	if c == "." {
		return "", nil
	}
	return c, nil
}

// layerEach streams the tar entries of a layer blob, verified, to fn. It
// reads the blob to EOF so the digest check always runs. The layer's
// uncompressed size and number of entries are counted as they stream and
// checked against lim before fn sees an entry (a LimitError past them).
func layerEach(ctx context.Context, p Provider, layer ocispec.Descriptor, lim Limits, fn func(h *tar.Header, r io.Reader) error) error {
	lim = lim.withDefaults()
	rc, err := openVerified(ctx, p, layer)
	if err != nil {
		return err
	}
	defer rc.Close()
	budget := &layerBudget{layer: layer.Digest, lim: lim}
	dr, err := decompress(budget.compressedReader(rc), layer.Digest)
	if err != nil {
		return fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	defer dr.Close()
	t := tar.NewReader(budget.reader(dr))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := t.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			var le *LimitError
			if errors.As(err, &le) {
				return err // names the layer
			}
			if hasKind(err) { // ErrDigestMismatch, or a kind from the source
				return fmt.Errorf("layer %s: %w", layer.Digest, err)
			}
			return fmt.Errorf("layer %s is not a valid tar stream: %w: %w", layer.Digest, err, errdefs.ErrInvalidArgument)
		}
		if err := budget.entry(h.Size); err != nil {
			return err
		}
		if err := fn(h, budget.dataReader(t)); err != nil {
			return err
		}
	}
	// Drain padding and trailing bytes so the verifier sees EOF.
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	return nil
}

// findInLayers reads the file at the absolute path target from the image's
// tar layers without unpacking them: for the target and each of its parent
// directories the topmost layer holding it wins, whiteouts and opaque
// directories hide lower layers, and symlinks (on the file or on a parent
// directory) are followed inside the image.
func findInLayers(ctx context.Context, p Provider, layers []ocispec.Descriptor, target string, limit int64) ([]byte, error) {
	target = strings.TrimPrefix(path.Clean("/"+target), "/")
	for hops := 0; hops < 40; hops++ {
		ents, err := scanPrefixes(ctx, p, layers, target, limit)
		if err != nil {
			return nil, err
		}
		next := ""
		parts := strings.Split(target, "/")
		for i := range parts {
			prefix := strings.Join(parts[:i+1], "/")
			e := ents[prefix]
			if e == nil || e.absent {
				return nil, fmt.Errorf("no such file in the image layers: %w", errdefs.ErrNotFound)
			}
			rest := strings.Join(parts[i+1:], "/")
			switch e.typ {
			case tar.TypeDir:
				if rest == "" {
					return nil, fmt.Errorf("is a directory, not a module file: %w", errdefs.ErrInvalidArgument)
				}
				continue
			case tar.TypeSymlink:
				link := e.link
				if !path.IsAbs(link) {
					link = path.Join("/", path.Dir(prefix), link)
				}
				next = path.Join(link, rest)
			case tar.TypeLink:
				next = path.Join("/", e.link, rest)
			case tar.TypeReg, tar.TypeRegA:
				if rest != "" {
					return nil, fmt.Errorf("%s is a file, not a directory: %w", prefix, errdefs.ErrNotFound)
				}
				return e.data, e.err
			default:
				return nil, fmt.Errorf("not a regular file (tar type %q): %w", e.typ, errdefs.ErrInvalidArgument)
			}
			break
		}
		target = strings.TrimPrefix(path.Clean(next), "/")
	}
	return nil, fmt.Errorf("too many levels of symbolic links: %w", errdefs.ErrInvalidArgument)
}

// layerEntry is what the topmost layer says about one path.
type layerEntry struct {
	absent   bool // hidden by a whiteout or an opaque directory above
	implicit bool // a parent directory the layer has no entry for
	typ      byte
	link     string
	data     []byte
	err      error
}

// scanPrefixes walks the layers top-down once and records, for target and
// each of its parent directories, the entry of the topmost layer that has
// it (or that it was whited out).
func scanPrefixes(ctx context.Context, p Provider, layers []ocispec.Descriptor, target string, limit int64) (map[string]*layerEntry, error) {
	prefixes := map[string]bool{}
	for d := target; d != "." && d != "" && d != "/"; d = path.Dir(d) {
		prefixes[d] = true
	}
	got := map[string]*layerEntry{}
	for i := len(layers) - 1; i >= 0 && len(got) < len(prefixes); i-- {
		if isWasmLayer(layers[i].MediaType) {
			continue
		}
		inLayer := map[string]*layerEntry{}
		var whiteouts, opaques []string
		err := layerEach(ctx, p, layers[i], Limits{}, func(h *tar.Header, r io.Reader) error {
			name, err := cleanEntry(h.Name)
			if err != nil {
				return err
			}
			dir, base := path.Split(name)
			dir = strings.TrimSuffix(dir, "/")
			switch {
			case base == whiteoutOpaque:
				opaques = append(opaques, dir)
			case strings.HasPrefix(base, whiteoutPrefix):
				whiteouts = append(whiteouts, path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix)))
			case prefixes[name] && got[name] == nil && (inLayer[name] == nil || inLayer[name].implicit):
				// Parent directories a layer leaves implicit still exist.
				for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
					if prefixes[d] && got[d] == nil && inLayer[d] == nil {
						inLayer[d] = &layerEntry{typ: tar.TypeDir, implicit: true}
					}
				}
				e := &layerEntry{typ: h.Typeflag, link: h.Linkname}
				if name == target && (h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeRegA) {
					if h.Size > limit {
						e.err = fmt.Errorf("file is %d bytes, over the %d byte limit: %w", h.Size, limit, errdefs.ErrResourceExhausted)
					} else {
						e.data, e.err = io.ReadAll(r)
					}
				}
				if h.Typeflag == tar.TypeLink {
					if e.link, err = cleanEntry(h.Linkname); err != nil {
						return err
					}
				}
				inLayer[name] = e
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		for n, e := range inLayer {
			got[n] = e
		}
		// Whiteouts and opaque markers hide what lower layers hold.
		for pfx := range prefixes {
			if got[pfx] != nil {
				continue
			}
			for _, w := range whiteouts {
				if pfx == w || strings.HasPrefix(pfx, w+"/") {
					got[pfx] = &layerEntry{absent: true}
				}
			}
			for _, o := range opaques {
				if o == "" || strings.HasPrefix(pfx, o+"/") {
					got[pfx] = &layerEntry{absent: true}
				}
			}
		}
	}
	return got, nil
}

// readFileInRoot reads p inside root, symlinks resolved within root by the
// kernel (fsroot: openat2 RESOLVE_IN_ROOT), then checked on the open fd.
func readFileInRoot(root, p string, limit int64) ([]byte, error) {
	r, err := fsroot.Open(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	f, err := r.OpenFile(p, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no such file in the image rootfs: %w", errdefs.ErrNotFound)
		}
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file: %w", errdefs.ErrInvalidArgument)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("file is %d bytes, over the %d byte limit: %w", st.Size(), limit, errdefs.ErrResourceExhausted)
	}
	return io.ReadAll(io.LimitReader(f, limit))
}

// unpackLayers applies the tar layers of an image, in order, into the empty
// directory root. Every entry is created relative to a directory fd that
// openat2 resolved inside root (internal/fsroot), with *at calls on its last
// name and O_NOFOLLOW|O_EXCL for files, so nothing lands outside root even
// if the tree changed under the unpacker. On top of that containment,
// entries are refused that a well-formed image never has: names with "..",
// hardlinks to outside, and paths through a symlink whose (relative) target
// climbs out of the root. Absolute symlink targets are taken inside root.
// Device nodes are skipped. Each layer is held to lim.
func unpackLayers(ctx context.Context, p Provider, layers []ocispec.Descriptor, root string, lim Limits) error {
	r, err := fsroot.Open(root, fsroot.NoCrossMounts())
	if err != nil {
		return err
	}
	defer r.Close()
	for _, l := range layers {
		if isWasmLayer(l.MediaType) {
			continue
		}
		written := map[string]bool{}
		err := layerEach(ctx, p, l, lim, func(h *tar.Header, rd io.Reader) error {
			return applyEntry(r, h, rd, written)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// resolveParents walks the parent directories of rel inside r, following
// symlinks the image made (absolute targets taken inside the root), and
// returns the directory the entry goes in. It refuses a relative symlink
// that climbs out of the root: fsroot would keep every operation inside r
// whatever the walk finds, but a well-formed image never has one. A
// component that does not exist yet ends the walk: the rest is created as
// directories.
func resolveParents(r *fsroot.Root, rel, entry string) (string, error) {
	parts := strings.Split(rel, "/")
	parts = parts[:len(parts)-1]
	cur := ""
	for i, part := range parts {
		next := path.Join(cur, part)
		for hops := 0; ; hops++ {
			st, err := r.Lstat(next)
			if err != nil {
				return path.Join(append([]string{next}, parts[i+1:]...)...), nil
			}
			if st.Mode&unix.S_IFMT != unix.S_IFLNK {
				break
			}
			if hops == 40 {
				return "", fmt.Errorf("entry %q: too many levels of symbolic links: %w", entry, ErrUnsafePath)
			}
			target, err := r.Readlink(next)
			if err != nil {
				return "", err
			}
			if path.IsAbs(target) {
				next = strings.TrimPrefix(path.Clean(target), "/")
			} else {
				j := path.Join(path.Dir(next), target)
				if j == ".." || strings.HasPrefix(j, "../") {
					return "", fmt.Errorf("entry %q goes through symlink %q -> %q: %w", entry, next, target, ErrUnsafePath)
				}
				next = j
			}
			if next == "." || next == "" {
				next = ""
				break
			}
		}
		cur = next
	}
	return cur, nil
}

func applyEntry(r *fsroot.Root, h *tar.Header, data io.Reader, written map[string]bool) error {
	rel, err := cleanEntry(h.Name)
	if err != nil {
		return err
	}
	if rel == "" {
		return nil
	}
	dir, err := resolveParents(r, rel, h.Name)
	if err != nil {
		return err
	}
	base := path.Base(rel)
	if dir != "" {
		if err := r.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("entry %q: %w", h.Name, err)
		}
	}
	// Whiteouts.
	if base == whiteoutOpaque {
		d, err := r.OpenFile(path.Join("/", dir), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return fmt.Errorf("entry %q: %w", h.Name, err)
		}
		names, err := d.Readdirnames(-1)
		d.Close()
		if err != nil {
			return err
		}
		for _, n := range names {
			if !written[path.Join(dir, n)] {
				if err := r.RemoveAll(path.Join(dir, n)); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		return r.RemoveAll(path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix)))
	}
	rel = path.Join(dir, base)
	written[rel] = true
	mode := uint32(h.Mode) & 0o777
	// Replace whatever is there unless both are directories; never write
	// through an existing symlink.
	if st, err := r.Lstat(rel); err == nil && !(st.Mode&unix.S_IFMT == unix.S_IFDIR && h.Typeflag == tar.TypeDir) {
		if err := r.RemoveAll(rel); err != nil {
			return err
		}
	}
	chown := os.Geteuid() == 0
	mtime := unix.NsecToTimespec(h.ModTime.UnixNano())
	times := [2]unix.Timespec{mtime, mtime}
	switch h.Typeflag {
	case tar.TypeDir:
		if err := r.Mkdir(rel, mode|0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if chown {
			_ = r.Lchown(rel, h.Uid, h.Gid)
		}
		if err := r.Chmod(rel, mode); err != nil {
			return err
		}
		_ = r.Lchtimes(rel, times)
	case tar.TypeReg, tar.TypeRegA:
		f, err := r.OpenFile(rel, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW, mode)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, data); err != nil {
			f.Close()
			return fmt.Errorf("entry %q: %w", h.Name, err)
		}
		// On the open file, never by name: owner, then the mode with
		// setuid/setgid/sticky (chown clears them), then the times.
		fd := int(f.Fd())
		if chown {
			_ = unix.Fchown(fd, h.Uid, h.Gid)
		}
		_ = unix.Fchmod(fd, mode|uint32(h.Mode)&0o7000)
		_ = unix.UtimesNanoAt(fd, "", times[:], unix.AT_EMPTY_PATH)
		if err := f.Close(); err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := r.Symlink(h.Linkname, rel); err != nil {
			return err
		}
		if chown {
			_ = r.Lchown(rel, h.Uid, h.Gid)
		}
	case tar.TypeLink:
		lrel, err := cleanEntry(h.Linkname)
		if err != nil || lrel == "" {
			return fmt.Errorf("hardlink %q -> %q: %w", h.Name, h.Linkname, ErrUnsafePath)
		}
		if st, err := r.Lstat(lrel); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			return fmt.Errorf("hardlink %q -> %q: target is not a regular file in the image: %w", h.Name, h.Linkname, errdefs.ErrInvalidArgument)
		}
		if err := r.Link(lrel, rel); err != nil {
			return err
		}
	default:
		// Device nodes and fifos are created by the runtime, not by
		// unpack; global headers and unknown types carry no file.
	}
	return nil
}
