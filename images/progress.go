package images

import (
	"fmt"
	"io"
	"sync"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// progress prints one line per blob being fetched, rewritten in place with
// "\r" at most ten times a second. It is meant for a terminal on stderr.
type progress struct {
	mu   sync.Mutex
	w    io.Writer
	last time.Time
}

func newProgress(w io.Writer) *progress {
	if w == nil {
		return nil
	}
	return &progress{w: w}
}

type progressReader struct {
	r    io.Reader
	p    *progress
	desc ocispec.Descriptor
	n    int64
}

func (p *progress) reader(r io.Reader, desc ocispec.Descriptor) io.Reader {
	return &progressReader{r: r, p: p, desc: desc}
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.n += int64(n)
	r.p.mu.Lock()
	if time.Since(r.p.last) > 100*time.Millisecond {
		r.p.last = time.Now()
		fmt.Fprintf(r.p.w, "\r%s %s / %s   ", short(r.desc.Digest.Encoded()), HumanSize(r.n), HumanSize(r.desc.Size))
	}
	r.p.mu.Unlock()
	return n, err
}

func (p *progress) done(desc ocispec.Descriptor, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	status := "done"
	if err != nil {
		status = "failed"
	}
	fmt.Fprintf(p.w, "\r%s %s %s          \n", short(desc.Digest.Encoded()), HumanSize(desc.Size), status)
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// HumanSize formats a byte count with binary units (1.5 MiB).
func HumanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
