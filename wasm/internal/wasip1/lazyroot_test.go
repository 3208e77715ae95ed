package wasip1

import (
	"errors"
	"strings"
	"testing"

	"github.com/kuasar-go/kuasar/internal/fsroot"
)

// TestPreopenOpensAtFirstUse checks that a preopen given as Open is opened
// at the guest's first use of its fd, not when the guest only asks its name
// (what wasi-libc does for every preopen at start), once, and that a failed
// open traps naming the directory.
func TestPreopenOpensAtFirstUse(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		openErr error
	}{
		{"opens", nil},
		{"fails", errors.New("gone")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opened := 0
			in := New(Config{Preopens: []Preopen{{GuestPath: "/data", Open: func() (*fsroot.Root, error) {
				opened++
				if tc.openErr != nil {
					return nil, tc.openErr
				}
				return fsroot.Open(dir)
			}}}})
			defer in.Close()
			if _, errno := in.getUnopened(3); errno != 0 || opened != 0 {
				t.Fatalf("naming the preopen: errno %d, %d opens; want 0, 0", errno, opened)
			}
			defer func() {
				r := recover()
				if tc.openErr == nil {
					if r != nil {
						t.Fatalf("first use panicked: %v", r)
					}
					return
				}
				if err, _ := r.(error); err == nil || !errors.Is(err, tc.openErr) || !strings.Contains(err.Error(), "/data") {
					t.Fatalf("failed open: recovered %v; want a trap naming /data and wrapping %v", r, tc.openErr)
				}
			}()
			for range 2 {
				e, errno := in.get(3)
				if errno != 0 || e.root == nil {
					t.Fatalf("first use: errno %d, root %v", errno, e.root)
				}
			}
			if opened != 1 {
				t.Errorf("opened %d times, want once", opened)
			}
		})
	}
}
