package bundle

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
)

func TestReadSpec(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret.json")
	if err := os.WriteFile(outside, []byte(`{"ociVersion":"1.0.2","hostname":"outside"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		setup    func(t *testing.T, dir string)
		wantHost string
		wantErr  error
	}{
		{"valid", func(t *testing.T, dir string) {
			write(t, dir, `{"ociVersion":"1.0.2","hostname":"h","process":{"args":["/app"]}}`)
		}, "h", nil},
		{"large, read whole", func(t *testing.T, dir string) {
			write(t, dir, `{"ociVersion":"1.0.2","hostname":"`+strings.Repeat("h", 300000)+`"}`)
		}, strings.Repeat("h", 300000), nil},
		{"missing", func(t *testing.T, dir string) {}, "", errdefs.ErrNotFound},
		{"not json", func(t *testing.T, dir string) { write(t, dir, "{") }, "", errdefs.ErrInvalidArgument},
		{"too large", func(t *testing.T, dir string) {
			write(t, dir, `{"hostname":"`+strings.Repeat("a", MaxSpecSize)+`"}`)
		}, "", errdefs.ErrInvalidArgument},
		{"fifo does not block", func(t *testing.T, dir string) {
			if err := syscall.Mkfifo(filepath.Join(dir, ConfigFile), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "", errdefs.ErrInvalidArgument},
		{"directory", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, ConfigFile), 0o700); err != nil {
				t.Fatal(err)
			}
		}, "", errdefs.ErrInvalidArgument},
		{"symlink inside the bundle is followed there", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "real.json"), []byte(`{"ociVersion":"1.0.2","hostname":"linked"}`), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("/real.json", filepath.Join(dir, ConfigFile)); err != nil {
				t.Fatal(err)
			}
		}, "linked", nil},
		{"absolute symlink stays inside the bundle", func(t *testing.T, dir string) {
			if err := os.Symlink(outside, filepath.Join(dir, ConfigFile)); err != nil {
				t.Fatal(err)
			}
		}, "", errdefs.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			s, err := ReadSpec(dir)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ReadSpec = %v, %v; want an error wrapping %v", s, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Hostname != tc.wantHost {
				t.Fatalf("hostname %q, want %q", s.Hostname, tc.wantHost)
			}
		})
	}
}

func TestReadSpecNoBundle(t *testing.T) {
	_, err := ReadSpec(filepath.Join(t.TempDir(), "gone"))
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("ReadSpec of a missing bundle = %v, want NotFound", err)
	}
}

func write(t *testing.T, dir, s string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
