package procfs

import (
	"errors"
	"os"
	"testing"

	"github.com/containerd/errdefs"
)

func TestRSSBytes(t *testing.T) {
	before, err := RSSBytes(0)
	if err != nil || before == 0 {
		t.Fatalf("own RSS = %d, %v", before, err)
	}
	// Touch 64 MiB: the resident set must grow by about that much.
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = 1
	}
	after, err := RSSBytes(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after < before+48<<20 {
		t.Errorf("RSS went from %d to %d after touching 64 MiB", before, after)
	}
	_ = buf[len(buf)-1]
	// pid 2 is kthreadd: no VmRSS line.
	if _, err := RSSBytes(2); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("kernel thread: err = %v, want NotFound", err)
	}
}
