package images

import (
	"errors"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// Default limits on what one layer may expand to. They are far above any
// real image (the largest public layers, CUDA and model images, are a few
// GiB; a full distribution userland is under 200,000 files) and far below
// what fills a disk or an inode table.
const (
	// DefaultMaxLayerSize bounds the uncompressed size of one layer (8 GiB).
	DefaultMaxLayerSize = 8 << 30
	// DefaultMaxLayerEntries bounds the number of tar entries in one layer.
	DefaultMaxLayerEntries = 1_000_000
	// maxZstdWindow is the largest zstd window a layer may ask for (128 MiB,
	// zstd's own recommendation for decoders of untrusted input; the
	// zstd CLI's default level uses 8 MiB). A frame asking for more would
	// make the decoder allocate that much before producing a byte.
	maxZstdWindow = 128 << 20
	// DefaultMaxLayerRatio bounds how many times larger than its compressed
	// bytes a layer may expand (100:1). Real content compresses 1.8-3.8:1
	// with gzip -6 or zstd -3 (binaries, a Go toolchain, /usr/bin, /etc:
	// docs/images.md); zeros, what a decompression bomb is made of,
	// compress 1,030:1 with gzip and 31,800:1 with zstd.
	DefaultMaxLayerRatio = 100
	// LayerRatioFloor is how many uncompressed bytes a layer may expand to
	// before its compression ratio is checked (256 MiB), so small layers of
	// zeros or sparse files are never refused for compressing well.
	LayerRatioFloor = 256 << 20
)

// Limits bounds what unpacking or scanning one layer may cost. Zero fields
// take the defaults; a negative field means no limit.
type Limits struct {
	// MaxLayerSize is the largest uncompressed size of one layer in bytes:
	// the tar stream and the sum of the entries' sizes (sparse files count
	// at their logical size), counted while streaming. It also bounds the
	// compressed blob fetched from a registry.
	MaxLayerSize int64
	// MaxLayerEntries is the largest number of tar entries in one layer.
	MaxLayerEntries int64
	// MaxLayerRatio is the largest ratio of uncompressed to compressed
	// bytes of one layer (N for N:1), checked while streaming once the
	// layer has expanded past LayerRatioFloor. It refuses a decompression
	// bomb long before MaxLayerSize: 4 MiB of gzip expanding to 4 GiB is
	// refused after 256 MiB.
	MaxLayerRatio int64
}

// WithLimits sets the per-layer limits of a pull or import (see Limits).
func WithLimits(l Limits) Option { return func(o *options) { o.limits = l } }

// withDefaults fills zero fields with the defaults.
func (l Limits) withDefaults() Limits {
	if l.MaxLayerSize == 0 {
		l.MaxLayerSize = DefaultMaxLayerSize
	}
	if l.MaxLayerEntries == 0 {
		l.MaxLayerEntries = DefaultMaxLayerEntries
	}
	if l.MaxLayerRatio == 0 {
		l.MaxLayerRatio = DefaultMaxLayerRatio
	}
	return l
}

// The limits a LimitError can name.
const (
	LimitLayerSize    = "uncompressed layer size"
	LimitLayerEntries = "number of entries in a layer"
	LimitZstdWindow   = "zstd window size"
	LimitLayerRatio   = "compression ratio of a layer"
)

// LimitError reports a layer refused because it exceeds a limit. It wraps
// errdefs.ErrResourceExhausted: the image is not malformed, it asks for
// more than this host grants.
type LimitError struct {
	// Layer is the digest of the refused layer.
	Layer digest.Digest
	// Limit is which limit was exceeded (LimitLayerSize, ...).
	Limit string
	// Max is the limit's value (bytes, entries, or N of the ratio N:1).
	Max int64
	// Unit is "bytes", "entries" or ":1" (a ratio).
	Unit string
	// Ratio, for LimitLayerRatio, is the ratio the layer had reached when
	// it was refused (uncompressed/compressed bytes read so far).
	Ratio float64
	// Fix says what to do about it (which flag raises the limit).
	Fix string
}

// Error names the layer, the limit it crossed and the flag that raises it.
func (e *LimitError) Error() string {
	if e.Limit == LimitLayerRatio {
		return fmt.Sprintf("layer %s exceeds the limit on the %s (%.0f:1, limit %d:1, checked once a layer passes %s uncompressed): %s: %s",
			e.Layer, e.Limit, e.Ratio, e.Max, HumanSize(LayerRatioFloor), e.Fix, errdefs.ErrResourceExhausted.Error())
	}
	msg := fmt.Sprintf("layer %s exceeds the limit on the %s (%d %s", e.Layer, e.Limit, e.Max, e.Unit)
	if e.Unit == "bytes" {
		msg += ", " + HumanSize(e.Max)
	}
	return msg + "): " + e.Fix + ": " + errdefs.ErrResourceExhausted.Error()
}

// Unwrap makes a LimitError an errdefs.ErrResourceExhausted.
func (e *LimitError) Unwrap() error { return errdefs.ErrResourceExhausted }

// What to do about each limit, for the error messages.
const (
	fixLayerSize    = "the image may be a decompression bomb; if it is trusted, raise the limit with --max-layer-size (kuasar pull/run; images.Limits.MaxLayerSize in Go)"
	fixLayerEntries = "the image may be an inode bomb; if it is trusted, raise the limit with --max-layer-entries (kuasar pull/run; images.Limits.MaxLayerEntries in Go)"
	fixLayerRatio   = "the image may be a decompression bomb; if it is trusted, raise the limit with --max-layer-ratio, or 0 to disable it (kuasar pull/run; images.Limits.MaxLayerRatio in Go)"
	fixZstdWindow   = "recompress the layer with a smaller window (zstd --long=27 or less; the zstd CLI's default levels use at most 8 MiB)"
)

// layerBudget counts what one layer costs while it is streamed.
type layerBudget struct {
	layer   digest.Digest
	lim     Limits
	bytes   int64 // uncompressed stream bytes read
	logical int64 // sum of the entries' sizes
	entries int64
	// compressed counts the blob's bytes read; data counts the entries'
	// bytes handed out, holes of sparse files included (they are written
	// as zeros), so a sparse bomb expands past the ratio too.
	compressed int64
	data       int64
}

// ratio checks the compression ratio once the layer has expanded past
// LayerRatioFloor.
func (b *layerBudget) ratio() error {
	n := max(b.bytes, b.data)
	if b.lim.MaxLayerRatio < 0 || n <= LayerRatioFloor {
		return nil
	}
	c := max(b.compressed, 1)
	if n/c < b.lim.MaxLayerRatio {
		return nil
	}
	if r := float64(n) / float64(c); r > float64(b.lim.MaxLayerRatio) {
		return &LimitError{Layer: b.layer, Limit: LimitLayerRatio, Max: b.lim.MaxLayerRatio, Unit: ":1", Ratio: r, Fix: fixLayerRatio}
	}
	return nil
}

// compressedReader counts the blob's bytes as the decompressor reads them.
func (b *layerBudget) compressedReader(r io.Reader) io.Reader {
	return readFunc(func(p []byte) (int, error) {
		n, err := r.Read(p)
		b.compressed += int64(n)
		return n, err
	})
}

// dataReader counts an entry's bytes as they are handed out.
func (b *layerBudget) dataReader(r io.Reader) io.Reader {
	return readFunc(func(p []byte) (int, error) {
		n, err := r.Read(p)
		b.data += int64(n)
		if rerr := b.ratio(); rerr != nil {
			return n, rerr
		}
		return n, err
	})
}

type readFunc func(p []byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

func (b *layerBudget) sizeError() error {
	return &LimitError{Layer: b.layer, Limit: LimitLayerSize, Max: b.lim.MaxLayerSize, Unit: "bytes", Fix: fixLayerSize}
}

// entry accounts for one tar entry, before any of its data is written.
func (b *layerBudget) entry(size int64) error {
	b.entries++
	if b.lim.MaxLayerEntries >= 0 && b.entries > b.lim.MaxLayerEntries {
		return &LimitError{Layer: b.layer, Limit: LimitLayerEntries, Max: b.lim.MaxLayerEntries, Unit: "entries", Fix: fixLayerEntries}
	}
	if size > 0 {
		b.logical += size
	}
	if b.lim.MaxLayerSize >= 0 && (size < 0 || b.logical > b.lim.MaxLayerSize) {
		return b.sizeError()
	}
	return nil
}

// reader counts the uncompressed stream and fails once it passes the limit.
func (b *layerBudget) reader(r io.Reader) io.Reader { return &budgetReader{r: r, b: b} }

type budgetReader struct {
	r io.Reader
	b *layerBudget
}

func (r *budgetReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.b.bytes += int64(n)
	if r.b.lim.MaxLayerSize >= 0 && r.b.bytes > r.b.lim.MaxLayerSize {
		return n, r.b.sizeError()
	}
	if rerr := r.b.ratio(); rerr != nil {
		return n, rerr
	}
	return n, err
}

// zstdReader opens a zstd stream with the window capped at maxZstdWindow
// and one decoding goroutine (layers are read sequentially).
func zstdReader(r io.Reader) (*zstd.Decoder, error) {
	return zstd.NewReader(r, zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
}

// zstdLimitReader turns the zstd decoder's window errors into a LimitError
// naming the layer.
type zstdLimitReader struct {
	d     *zstd.Decoder
	layer digest.Digest
}

func (z zstdLimitReader) Read(p []byte) (int, error) {
	n, err := z.d.Read(p)
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		err = &LimitError{Layer: z.layer, Limit: LimitZstdWindow, Max: maxZstdWindow, Unit: "bytes", Fix: fixZstdWindow}
	}
	return n, err
}

func (z zstdLimitReader) Close() error { z.d.Close(); return nil }
