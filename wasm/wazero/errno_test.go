package wazero_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

// TestEMFILEReachesGuest runs a guest whose open fails because the host
// process is out of file descriptors: the guest must see EMFILE ("No file
// descriptors available" in wasi-libc), not EIO, with both engines and both
// WASI hosts. kuasar's host holds one descriptor per mount (its root), wazero's
// two (the mount's root and its preopen): spare is what the run needs.
func TestEMFILEReachesGuest(t *testing.T) {
	for _, engine := range []struct {
		name  string
		opts  []wazero.Option
		spare int
	}{
		{"compiler", nil, 1},
		{"interpreter", []wazero.Option{wazero.WithInterpreter()}, 1},
		{"wazero WASI", []wazero.Option{wazero.WithWazeroWASI()}, 2},
	} {
		t.Run(engine.name, func(t *testing.T) {
			e := newEngine(t, engine.opts...)
			m := compile(t, e, fixtures.WASI)
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := wasm.RunConfig{Args: []string{"w", "read", "/data/f"}, Mounts: []wasm.Mount{{HostPath: dir, GuestPath: "/data"}}}
			if r := run(t, m, cfg); r.code != 0 || r.stdout != "data" {
				t.Fatalf("with fds to spare: code %d, %q, %q", r.code, r.stdout, r.stderr)
			}
			// Leave the process the descriptors the mount takes: the
			// guest's open finds none.
			release := exhaustFds(t, engine.spare)
			r := run(t, m, cfg)
			release()
			if r.code != 1 || !strings.Contains(r.stderr, "No file descriptors available") {
				t.Errorf("out of fds: code %d, stderr %q, want EMFILE (\"No file descriptors available\")", r.code, r.stderr)
			}
		})
	}
}

// exhaustFds lowers the soft RLIMIT_NOFILE and opens /dev/null until only
// spare descriptors are left; release closes them and restores the limit.
func exhaustFds(t *testing.T, spare int) (release func()) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = 256
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var fds []int
	release = func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		fds = nil
		unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
	}
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == unix.EMFILE {
			break
		}
		if err != nil {
			release()
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	if len(fds) < spare {
		release()
		t.Fatalf("only %d descriptors below the limit", len(fds))
	}
	for _, fd := range fds[len(fds)-spare:] {
		unix.Close(fd)
	}
	fds = fds[:len(fds)-spare]
	return release
}
