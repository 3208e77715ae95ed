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
	"github.com/opencontainers/go-digest"
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
// too often) and returns the plain tar stream of layer. zstd windows are
// capped at MaxZstdWindow.
func decompress(r io.Reader, layer digest.Digest) (io.ReadCloser, error) {
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
		zr, err := zstdReader(br)
		if err != nil {
			return nil, fmt.Errorf("zstd layer: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		return zstdLimitReader{d: zr, layer: layer}, nil
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
	dr, err := decompress(rc, layer.Digest)
	if err != nil {
		return fmt.Errorf("layer %s: %w", layer.Digest, err)
	}
	defer dr.Close()
	budget := &layerBudget{layer: layer.Digest, lim: lim}
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
			if errors.Is(err, ErrDigestMismatch) {
				return fmt.Errorf("layer %s: %w", layer.Digest, err)
			}
			return fmt.Errorf("layer %s is not a valid tar stream: %v: %w", layer.Digest, err, errdefs.ErrInvalidArgument)
		}
		if err := budget.entry(h.Size); err != nil {
			return err
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
// root. Device nodes are skipped. Each layer is held to lim.
func unpackLayers(ctx context.Context, p Provider, layers []ocispec.Descriptor, root string, lim Limits) error {
	for _, l := range layers {
		if isWasmLayer(l.MediaType) {
			continue
		}
		written := map[string]bool{}
		err := layerEach(ctx, p, l, lim, func(h *tar.Header, r io.Reader) error {
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
