package sandboxer

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	api "github.com/containerd/containerd/api/services/sandbox/v1"
)

// longDir returns a directory path of exactly n bytes under parent (not
// created), in components a filesystem accepts.
func longDir(t *testing.T, parent string, n int) string {
	p := parent
	for len(p) < n {
		seg := min(n-len(p)-1, 60)
		if seg < 1 { // one byte left: widen the previous component
			p += "x"
			continue
		}
		p += "/" + strings.Repeat("d", seg)
	}
	if len(p) != n {
		t.Fatalf("built %d bytes, want %d", len(p), n)
	}
	return p
}

// TestLongStateDir runs sandboxes with state directories from 61 bytes to
// far past the unix socket limit, and containerd's 64-hex IDs: before, any
// state directory over about 20 bytes failed every pod ("over the unix
// limit"). Each task socket and backend directory must fit, serve, survive
// a restart, and be gone after a failed start and after Shutdown; a stray
// socket without a record is removed at start-up.
func TestLongStateDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a long state directory's sockets go under " + shortRoot + ": needs root")
	}
	for _, tt := range []struct {
		name    string
		n       int
		inState bool
	}{
		{"61 bytes", 61, true},
		{"longest kept in the state dir", maxBaseLen, true},
		{"one byte more", maxBaseLen + 1, false},
		{"200 bytes", 200, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := shortTempDir(t)
			h := &harness{t: t, dir: dir, state: longDir(t, dir, tt.n), wasm: &fakeBackend{name: "wasm"}, vm: &fakeBackend{name: "vm"}}
			h.start()
			base := h.svc.SocketsDir()
			if (base == h.svc.StateDir()) != tt.inState {
				t.Fatalf("sockets dir %s for state dir %s: want inside it %v", base, h.svc.StateDir(), tt.inState)
			}
			if !tt.inState {
				fi, err := os.Stat(base)
				if err != nil || fi.Mode().Perm() != 0o700 {
					t.Fatalf("short sockets dir %s: %v %v, want mode 0700", base, fi, err)
				}
				t.Cleanup(func() {
					os.RemoveAll(base)
					os.Remove(shortRoot) // only when no other state dir uses it
				})
			}
			ctx := context.Background()
			id := strings.Repeat("0123456789abcdef", 4)
			st := h.createStart(ctx, id, map[string]string{AnnotationIsolation: "vm"})
			sock := strings.TrimPrefix(st.Address, "ttrpc+unix://")
			if len(sock) > maxSocketPath || !strings.HasPrefix(sock, base+"/") {
				t.Fatalf("task socket %s (%d bytes) not under %s within %d bytes", sock, len(sock), base, maxSocketPath)
			}
			if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
				t.Fatalf("task socket %s: %v %v", sock, fi, err)
			}
			if _, err := dialTasks(t, st.Address).Create(ctx, &taskAPI.CreateTaskRequest{ID: "c", Bundle: t.TempDir()}); err != nil {
				t.Fatal(err)
			}
			// The backend can listen on its longest socket (the VM backend's
			// virtio-fs socket, and Cloud Hypervisor's hybrid vsock suffix).
			bdir := h.vm.dirs[0]
			for _, name := range []string{"vm/virtiofs.sock", "vm/vsock.sock_1024"} {
				p := filepath.Join(bdir, name)
				os.MkdirAll(filepath.Dir(p), 0o700)
				l, err := net.Listen("unix", p)
				if err != nil {
					t.Fatalf("backend socket %s (%d bytes): %v", p, len(p), err)
				}
				l.Close()
			}

			// A start that fails leaves no socket and no backend directory.
			h.vm.failStart = errors.New("boom")
			if _, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: "fails", Options: podOptions(t, map[string]string{AnnotationIsolation: "vm"})}); err != nil {
				t.Fatal(err)
			}
			if _, err := h.client.Start(ctx, &api.ControllerStartRequest{SandboxID: "fails"}); err == nil {
				t.Fatal("start with a failing backend succeeded")
			}
			if _, err := os.Lstat(h.svc.store.taskSocket("fails")); !os.IsNotExist(err) {
				t.Fatalf("failed start left its task socket: %v", err)
			}
			if _, err := os.Lstat(h.svc.store.backendDir("fails")); !os.IsNotExist(err) {
				t.Fatalf("failed start left its backend dir: %v", err)
			}

			// A stray socket with no record (a crash between listen and the
			// first save) is removed at the next start; the sandbox's own is
			// served again at the same address.
			stray, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(base, "s", "0000000000000000.sock"), Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			stray.SetUnlinkOnClose(false)
			stray.Close()
			h.restart()
			if _, err := os.Lstat(stray.Addr().String()); !os.IsNotExist(err) {
				t.Fatalf("stray socket survived the restart: %v", err)
			}
			s, err := h.client.Status(ctx, &api.ControllerStatusRequest{SandboxID: id})
			if err != nil || s.Address != st.Address {
				t.Fatalf("status after restart: %+v %v, want address %s", s, err, st.Address)
			}
			if _, err := dialTasks(t, s.Address).Connect(ctx, &taskAPI.ConnectRequest{}); err != nil {
				t.Fatalf("task socket after restart: %v", err)
			}

			for _, sid := range []string{id, "fails"} {
				if _, err := h.client.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: sid}); err != nil {
					t.Fatal(err)
				}
			}
			for _, sub := range []string{"s", "b"} {
				if ents, _ := os.ReadDir(filepath.Join(base, sub)); len(ents) != 0 {
					t.Fatalf("%s/%s holds %d entries after Shutdown: %v", base, sub, len(ents), ents)
				}
			}
		})
	}
}

// TestSocketsBaseRefusesUnsafeDir: a short sockets directory that someone
// else could write (or a symlink) is refused at start-up with the fix named.
func TestSocketsBaseRefusesUnsafeDir(t *testing.T) {
	dir := shortTempDir(t)
	old := shortRoot
	shortRoot = filepath.Join(dir, "short")
	defer func() { shortRoot = old }()
	root := longDir(t, dir, 150)
	base, inState := socketsBase(root)
	if inState {
		t.Fatal("150-byte state dir kept for sockets")
	}
	if err := os.MkdirAll(base, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(base, 0o777)
	if err := prepareBase(root, base); err == nil || !strings.Contains(err.Error(), "only its owner can write") {
		t.Fatalf("world-writable sockets dir: %v", err)
	}
	os.RemoveAll(base)
	if err := os.Symlink(dir, base); err != nil {
		t.Fatal(err)
	}
	if err := prepareBase(root, base); err == nil {
		t.Fatal("symlinked sockets dir accepted")
	}
}
