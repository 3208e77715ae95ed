package vmm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildHelper builds cmd/kuasar-vmm-jail into a fresh directory and
// returns its path.
func buildHelper(t testing.TB) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("building the helper needs the go tool in PATH")
	}
	out := filepath.Join(t.TempDir(), HelperName)
	cmd := exec.Command(goBin, "build", "-o", out, "github.com/kuasar-go/kuasar/cmd/kuasar-vmm-jail")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build the helper: %v\n%s", err, b)
	}
	return out
}

// useHelper makes this process resolve its helper again, with HelperEnv
// set to path, and restores the previous resolution when t ends.
func useHelper(t *testing.T, path string) {
	t.Setenv(HelperEnv, path)
	prev := helperPath
	helperPath = sync.OnceValue(findHelper)
	t.Cleanup(func() { helperPath = prev })
}

// TestHelperBinary runs jails and mount namespaces through the
// dedicated helper binary and checks, from the helper's own report of
// the executable it ran as (/proc/self/exe, in its failure log line),
// that the small binary ran them when it is safe, and that the calling
// binary is re-executed instead when the helper is missing, group- or
// world-writable (or below such a directory), not owned by root, or not
// a regular file.
func TestHelperBinary(t *testing.T) {
	if !CanJail() {
		t.Skip("the VMM jail needs root")
	}
	built := buildHelper(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	self, _ = filepath.EvalSymlinks(self)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) string // returns the HelperEnv value
		want  string                    // the executable the helper ran as
	}{
		{"safe", func(t *testing.T) string { return built }, built},
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), HelperName) }, self},
		{"group-writable", func(t *testing.T) string { return placeHelper(t, built, t.TempDir(), 0o775) }, self},
		{"world-writable", func(t *testing.T) string { return placeHelper(t, built, t.TempDir(), 0o757) }, self},
		{"in a group-writable directory", func(t *testing.T) string {
			return placeHelper(t, built, groupWritableDir(t), 0o755)
		}, self},
		{"not owned by root", func(t *testing.T) string {
			p := placeHelper(t, built, t.TempDir(), 0o755)
			if err := os.Chown(p, 2_100_000_302, 0); err != nil {
				t.Fatal(err)
			}
			return p
		}, self},
		{"below a group-writable directory", func(t *testing.T) string {
			sub := filepath.Join(groupWritableDir(t), "sub")
			os.Mkdir(sub, 0o755)
			return placeHelper(t, built, sub, 0o755)
		}, self},
		{"through a symlink", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "link")
			if err := os.Symlink(built, p); err != nil {
				t.Fatal(err)
			}
			return p
		}, built},
		{"directory", func(t *testing.T) string { return t.TempDir() }, self},
	} {
		t.Run(tc.name, func(t *testing.T) {
			useHelper(t, tc.setup(t))
			base := t.TempDir()
			// A jail on a missing root fails in the helper, whose log
			// line names the binary it ran as.
			logPath := filepath.Join(base, "jail.log")
			j := &Jail{Root: filepath.Join(base, "no-such-root"), UID: 2_100_000_300, GID: 2_100_000_300}
			if p, err := StartJailed("/bin/true", nil, logPath, j); err == nil {
				p.Kill()
				t.Fatal("jail on a missing root started")
			}
			wantLine := JailArg0 + " (" + tc.want + "): "
			if b, _ := os.ReadFile(logPath); !strings.Contains(string(b), wantLine) {
				t.Errorf("jail helper log %q: want a line starting %q", b, wantLine)
			}
			logPath = filepath.Join(base, "ns.log")
			if p, err := StartInNamespace("/bin/true", nil, logPath, []NSBind{{Source: filepath.Join(base, "missing"), Target: base}}); err == nil {
				p.Kill()
				t.Fatal("namespace with a missing bind source started")
			}
			wantLine = NSArg0 + " (" + tc.want + "): "
			if b, _ := os.ReadFile(logPath); !strings.Contains(string(b), wantLine) {
				t.Errorf("namespace helper log %q: want a line starting %q", b, wantLine)
			}
			// And a jail that can be built runs its command.
			root := filepath.Join(base, "jail")
			if err := os.Mkdir(root, 0o700); err != nil {
				t.Fatal(err)
			}
			p, err := StartJailed("/bin/true", nil, filepath.Join(base, "ok.log"), &Jail{
				Root: root, Binds: []Bind{{Path: "/usr"}},
				Symlinks: map[string]string{"/lib": "usr/lib", "/lib64": "usr/lib64", "/bin": "usr/bin"},
				UID:      2_100_000_301, GID: 2_100_000_301,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := p.Wait(ctx); err != nil {
				b, _ := os.ReadFile(filepath.Join(base, "ok.log"))
				t.Fatalf("jailed /bin/true: %v; log %s", err, b)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(to, mode); err != nil { // WriteFile honours the umask
		t.Fatal(err)
	}
}

// placeHelper copies the built helper into dir under its name, with mode.
func placeHelper(t *testing.T, built, dir string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, HelperName)
	copyFile(t, built, p, mode)
	return p
}

// groupWritableDir is a new directory of mode 0775.
func groupWritableDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chmod(d, 0o775); err != nil {
		t.Fatal(err)
	}
	return d
}
