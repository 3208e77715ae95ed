package images

import (
	"context"
	"encoding/json"
	"fmt"
	"hash"
	"io"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Provider gives random access to blobs by descriptor. It has the method
// shape of containerd's content.Provider, so containerd's content store (and
// kuasar's own Store) can be handed to ModuleFromImage and MetadataFromImage
// unchanged.
type Provider interface {
	// ReaderAt opens the blob desc names.
	ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error)
}

// maxJSONBlob bounds manifests, indexes and configs read into memory: real
// ones are a few KiB; 4 MiB is what registries accept for manifests.
const maxJSONBlob = 4 << 20

// maxModuleSize bounds a Wasm module read into memory.
const maxModuleSize = 512 << 20

// verifier wraps a reader and fails at EOF when the bytes read do not match
// the descriptor's size and digest, so no consumer reaching EOF ever sees
// unverified content as valid.
type verifier struct {
	r    io.Reader
	desc ocispec.Descriptor
	h    hash.Hash
	n    int64
	done bool
}

func newVerifier(r io.Reader, desc ocispec.Descriptor) (*verifier, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("descriptor digest %q: %w: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	if !desc.Digest.Algorithm().Available() {
		return nil, fmt.Errorf("digest algorithm %q of %s is not supported (use sha256): %w", desc.Digest.Algorithm(), desc.Digest, errdefs.ErrNotImplemented)
	}
	if desc.Size < 0 {
		return nil, fmt.Errorf("descriptor %s has negative size %d: %w", desc.Digest, desc.Size, errdefs.ErrInvalidArgument)
	}
	// Read one byte past the declared size so oversized content is detected.
	return &verifier{r: io.LimitReader(r, desc.Size+1), desc: desc, h: desc.Digest.Algorithm().Hash()}, nil
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.h.Write(p[:n])
	if v.n > v.desc.Size {
		return n, fmt.Errorf("blob %s is larger than its descriptor's %d bytes: %w", v.desc.Digest, v.desc.Size, ErrDigestMismatch)
	}
	if err == io.EOF && !v.done {
		v.done = true
		if v.n != v.desc.Size {
			return n, fmt.Errorf("blob %s: got %d bytes, descriptor says %d: %w", v.desc.Digest, v.n, v.desc.Size, ErrDigestMismatch)
		}
		if got := digest.NewDigest(v.desc.Digest.Algorithm(), v.h); got != v.desc.Digest {
			return n, fmt.Errorf("blob content has digest %s, expected %s: %w", got, v.desc.Digest, ErrDigestMismatch)
		}
	}
	return n, err
}

// ErrDigestMismatch is wrapped by every error about content that does not
// match its descriptor (wrong digest or size). It is an ErrDataLoss-like
// condition reported as errdefs.ErrFailedPrecondition.
var ErrDigestMismatch = fmt.Errorf("content does not match its digest (the source served wrong or corrupted bytes; re-push or re-export the image): %w", errdefs.ErrFailedPrecondition)

// openVerified opens desc from p as a sequential reader that fails at EOF on
// a digest or size mismatch. Callers must read to EOF to get the check.
func openVerified(ctx context.Context, p Provider, desc ocispec.Descriptor) (io.ReadCloser, error) {
	ra, err := p.ReaderAt(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("open blob %s (%s): %w", desc.Digest, desc.MediaType, err)
	}
	v, err := newVerifier(io.NewSectionReader(ra, 0, desc.Size+1), desc)
	if err != nil {
		ra.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{v, ra}, nil
}

// readVerified reads all of desc from p, verifying size and digest, refusing
// blobs larger than limit.
func readVerified(ctx context.Context, p Provider, desc ocispec.Descriptor, limit int64) ([]byte, error) {
	if desc.Size > limit {
		return nil, fmt.Errorf("blob %s (%s) is %d bytes, over the %d byte limit: %w", desc.Digest, desc.MediaType, desc.Size, limit, errdefs.ErrResourceExhausted)
	}
	rc, err := openVerified(ctx, p, desc)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// readJSON reads desc from p, verified, and decodes it into v.
func readJSON(ctx context.Context, p Provider, desc ocispec.Descriptor, v any) error {
	b, err := readVerified(ctx, p, desc, maxJSONBlob)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s %s: %w: %w", desc.MediaType, desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// bytesReaderAt is a content.ReaderAt over memory.
type bytesReaderAt struct{ b []byte }

func (r bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(r.b)) {
		return 0, io.EOF
	}
	n := copy(p, r.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (r bytesReaderAt) Size() int64  { return int64(len(r.b)) }
func (r bytesReaderAt) Close() error { return nil }
