package unixsock

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

// listeners are the two ways this package makes a listening socket, each
// as a net.Listener for the same checks.
var listeners = []struct {
	name   string
	listen func(path string, mode os.FileMode) (net.Listener, error)
}{
	{"Listen", func(path string, mode os.FileMode) (net.Listener, error) {
		l, err := Listen(path, mode)
		if err != nil {
			if l != nil {
				return nil, fmt.Errorf("listener returned with an error: %w", err)
			}
			return nil, err
		}
		return l, nil
	}},
	// ListenFD returns a descriptor the sandboxer polls itself; a missing
	// directory must be fs.ErrNotExist (it creates the directory on that
	// error only).
	{"ListenFD", func(path string, mode os.FileMode) (net.Listener, error) {
		fd, err := ListenFD(path, mode)
		if err != nil {
			if fd != -1 {
				return nil, fmt.Errorf("descriptor %d returned with an error: %w", fd, err)
			}
			return nil, err
		}
		f := os.NewFile(uintptr(fd), path)
		defer f.Close()
		return net.FileListener(f)
	}},
}

func TestListen(t *testing.T) {
	for _, ls := range listeners {
		t.Run(ls.name, func(t *testing.T) {
			dir := t.TempDir()
			stale := filepath.Join(dir, "stale.sock")
			old, err := net.Listen("unix", stale)
			if err != nil {
				t.Fatal(err)
			}
			old.(*net.UnixListener).SetUnlinkOnClose(false)
			old.Close() // leaves the socket file behind, as a crashed process does
			regular := filepath.Join(dir, "file")
			if err := os.WriteFile(regular, []byte("keep"), 0o644); err != nil {
				t.Fatal(err)
			}
			tests := []struct {
				name    string
				path    string
				mode    os.FileMode
				wantErr error
			}{
				{"new socket 0600", filepath.Join(dir, "a.sock"), 0o600, nil},
				{"new socket 0660", filepath.Join(dir, "b.sock"), 0o660, nil},
				{"stale socket replaced", stale, 0o600, nil},
				{"regular file kept", regular, 0o600, errdefs.ErrAlreadyExists},
				{"world-writable refused", filepath.Join(dir, "c.sock"), 0o666, errdefs.ErrInvalidArgument},
				{"missing directory", filepath.Join(dir, "none", "d.sock"), 0o600, fs.ErrNotExist},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					l, err := ls.listen(tt.path, tt.mode)
					if tt.wantErr != nil {
						if !errors.Is(err, tt.wantErr) {
							t.Fatalf("err = %v, want %v", err, tt.wantErr)
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					defer l.Close()
					fi, err := os.Lstat(tt.path)
					if err != nil {
						t.Fatal(err)
					}
					if fi.Mode()&os.ModeSocket == 0 {
						t.Errorf("%s is %v, not a socket", tt.path, fi.Mode())
					}
					if got := fi.Mode().Perm(); got != tt.mode {
						t.Errorf("mode %#o, want %#o", got, tt.mode)
					}
					c, err := net.Dial("unix", tt.path)
					if err != nil {
						t.Fatalf("dial: %v", err)
					}
					c.Close()
				})
			}
			if b, err := os.ReadFile(regular); err != nil || string(b) != "keep" {
				t.Errorf("regular file changed: %q, %v", b, err)
			}
		})
	}
}
