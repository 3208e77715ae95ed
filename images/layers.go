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
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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
// too often) and returns the plain tar stream.
func decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(4)
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip layer: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		return zr, nil
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("zstd layer: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
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
// reads the blob to EOF so the digest check always runs.
func layerEach(ctx context.Context, p Provider, layer ocispec.Descriptor, fn func(h *tar.Header, r io.Reader) error) error {
	rc, err := openVerified(ctx, p, layer)
	if err != nil {
		return err
	}
	defer rc.Close()
	tr, err := decompress(rc)
	if err != nil {
		return fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	defer tr.Close()
	t := tar.NewReader(tr)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := t.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, ErrDigestMismatch) {
				return fmt.Errorf("layer %s: %w", layer.Digest, err)
			}
			return fmt.Errorf("layer %s is not a valid tar stream: %v: %w", layer.Digest, err, errdefs.ErrInvalidArgument)
		}
		if err := fn(h, t); err != nil {
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
// tar layers without unpacking them: the topmost layer holding it wins,
// whiteouts hide lower layers, and symlinks are followed inside the image.
func findInLayers(ctx context.Context, p Provider, layers []ocispec.Descriptor, target string, limit int64) ([]byte, error) {
	target = strings.TrimPrefix(path.Clean("/"+target), "/")
	for hops := 0; hops < 40; hops++ {
		var (
			found    bool
			data     []byte
			link     string
			hidden   bool
			foundErr error
		)
		for i := len(layers) - 1; i >= 0 && !found && !hidden; i-- {
			if isWasmLayer(layers[i].MediaType) {
				continue
			}
			err := layerEach(ctx, p, layers[i], func(h *tar.Header, r io.Reader) error {
				name, err := cleanEntry(h.Name)
				if err != nil {
					return err
				}
				dir, base := path.Split(name)
				dir = strings.TrimSuffix(dir, "/")
				switch {
				case base == whiteoutOpaque && (dir == "" || strings.HasPrefix(target, dir+"/")):
					hidden = true
				case strings.HasPrefix(base, whiteoutPrefix):
					w := path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix))
					if w == target || strings.HasPrefix(target, w+"/") {
						hidden = true
					}
				case name == target && !found:
					found = true
					switch h.Typeflag {
					case tar.TypeReg:
						if h.Size > limit {
							foundErr = fmt.Errorf("file is %d bytes, over the %d byte limit: %w", h.Size, limit, errdefs.ErrResourceExhausted)
							return nil
						}
						data, foundErr = io.ReadAll(r)
					case tar.TypeSymlink:
						if path.IsAbs(h.Linkname) {
							link = h.Linkname
						} else {
							link = path.Join("/", dir, h.Linkname)
						}
					case tar.TypeLink:
						link = "/" + h.Linkname
					default:
						foundErr = fmt.Errorf("not a regular file (tar type %q): %w", h.Typeflag, errdefs.ErrInvalidArgument)
					}
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			// A whiteout in the same layer as the file cannot happen in a
			// well-formed layer; the file wins if both are present.
			if found {
				hidden = false
			}
		}
		if foundErr != nil {
			return nil, foundErr
		}
		if !found || hidden {
			return nil, fmt.Errorf("no such file in the image layers: %w", errdefs.ErrNotFound)
		}
		if link == "" {
			return data, nil
		}
		target = strings.TrimPrefix(path.Clean(link), "/")
	}
	return nil, fmt.Errorf("too many levels of symbolic links: %w", errdefs.ErrInvalidArgument)
}

// readFileInRoot reads p inside root, symlinks resolved within root.
func readFileInRoot(root, p string, limit int64) ([]byte, error) {
	full, err := securejoin.SecureJoin(root, p)
	if err != nil {
		return nil, fmt.Errorf("resolve %s in %s: %w", p, root, err)
	}
	f, err := os.Open(full)
	if err != nil {
		if os.IsNotExist(err) {
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
	return io.ReadAll(f)
}

// unpackLayers applies the tar layers of an image, in order, into the empty
// directory root. Entries that would land outside root are refused: names
// with "..", hardlinks to outside, and paths through a symlink whose target
// (relative) leaves the root. Absolute symlink targets are resolved inside
// root. Device nodes are skipped.
func unpackLayers(ctx context.Context, p Provider, layers []ocispec.Descriptor, root string) error {
	for _, l := range layers {
		if isWasmLayer(l.MediaType) {
			continue
		}
		written := map[string]bool{}
		err := layerEach(ctx, p, l, func(h *tar.Header, r io.Reader) error {
			return applyEntry(root, h, r, written)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// checkParents walks the parent directories of rel inside root and refuses a
// relative symlink that climbs out of the root.
func checkParents(root, rel, entry string) error {
	parts := strings.Split(rel, "/")
	cur := ""
	for _, part := range parts[:len(parts)-1] {
		next := path.Join(cur, part)
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil {
			return nil // does not exist yet (or resolved below by SecureJoin)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(filepath.Join(root, next))
			if err != nil {
				return err
			}
			if !path.IsAbs(target) {
				if j := path.Join(cur, target); j == ".." || strings.HasPrefix(j, "../") {
					return fmt.Errorf("entry %q goes through symlink %q -> %q: %w", entry, next, target, ErrUnsafePath)
				}
			}
			// Continue the walk at the symlink's (contained) target.
			resolved, err := securejoin.SecureJoin(root, next)
			if err != nil {
				return err
			}
			rr, err := filepath.Rel(root, resolved)
			if err != nil {
				return err
			}
			next = filepath.ToSlash(rr)
		}
		cur = next
	}
	return nil
}

func applyEntry(root string, h *tar.Header, r io.Reader, written map[string]bool) error {
	rel, err := cleanEntry(h.Name)
	if err != nil {
		return err
	}
	if rel == "" {
		return nil
	}
	if err := checkParents(root, rel, h.Name); err != nil {
		return err
	}
	dir, base := path.Split(rel)
	parent, err := securejoin.SecureJoin(root, dir)
	if err != nil {
		return fmt.Errorf("entry %q: %v: %w", h.Name, err, ErrUnsafePath)
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	// Whiteouts.
	if base == whiteoutOpaque {
		ents, err := os.ReadDir(parent)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if !written[path.Join(dir, e.Name())] {
				if err := os.RemoveAll(filepath.Join(parent, e.Name())); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		return os.RemoveAll(filepath.Join(parent, strings.TrimPrefix(base, whiteoutPrefix)))
	}
	dst := filepath.Join(parent, base)
	written[strings.TrimSuffix(rel, "/")] = true
	mode := os.FileMode(h.Mode) & os.ModePerm
	// Replace whatever is there unless both are directories; never write
	// through an existing symlink.
	if fi, err := os.Lstat(dst); err == nil && !(fi.IsDir() && h.Typeflag == tar.TypeDir) {
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(dst, mode|0o700); err != nil && !os.IsExist(err) {
			return err
		}
		if err := os.Chmod(dst, mode); err != nil {
			return err
		}
	case tar.TypeReg, tar.TypeRegA:
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW, mode)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, r); err != nil {
			f.Close()
			return fmt.Errorf("entry %q: %w", h.Name, err)
		}
		if err := f.Close(); err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := os.Symlink(h.Linkname, dst); err != nil {
			return err
		}
	case tar.TypeLink:
		lrel, err := cleanEntry(h.Linkname)
		if err != nil {
			return fmt.Errorf("hardlink %q -> %q: %w", h.Name, h.Linkname, ErrUnsafePath)
		}
		src, err := securejoin.SecureJoin(root, lrel)
		if err != nil {
			return fmt.Errorf("hardlink %q: %v: %w", h.Name, err, ErrUnsafePath)
		}
		if fi, err := os.Lstat(src); err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("hardlink %q -> %q: target is not a regular file in the image: %w", h.Name, h.Linkname, errdefs.ErrInvalidArgument)
		}
		if err := os.Link(src, dst); err != nil {
			return err
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		// Device nodes and fifos are created by the runtime, not by unpack.
		return nil
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return nil
	}
	if h.Typeflag != tar.TypeLink {
		if os.Geteuid() == 0 {
			_ = os.Lchown(dst, h.Uid, h.Gid)
		}
		if h.Typeflag != tar.TypeSymlink {
			if h.Mode&0o7000 != 0 && h.Typeflag == tar.TypeReg {
				// Keep setuid/setgid/sticky bits (chown clears them).
				_ = os.Chmod(dst, mode|modeSpecial(h.Mode))
			}
			_ = os.Chtimes(dst, h.ModTime, h.ModTime)
		}
	}
	return nil
}

// modeSpecial maps tar's setuid/setgid/sticky bits to os.FileMode bits.
func modeSpecial(m int64) os.FileMode {
	var fm os.FileMode
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}
