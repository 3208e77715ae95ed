package images_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/fixtures"
)

// toolsDir is where `make deps` installs containerd and friends.
func toolsDir() string {
	if d := os.Getenv("KUASAR_TOOLS"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "kuasar-tools")
}

// TestContainerdArchiveInterop checks, against a real containerd, that
// archives kuasar writes import with `ctr images import` under their names,
// and that what `ctr images export` writes resolves in kuasar's store: the
// pause image the CRI tests need and a Wasm image.
func TestContainerdArchiveInterop(t *testing.T) {
	if testing.Short() {
		t.Skip("runs containerd; -short runs unit tests only")
	}
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root")
	}
	bin := filepath.Join(toolsDir(), "containerd-v2.4.2")
	containerd, ctr := filepath.Join(bin, "containerd"), filepath.Join(bin, "ctr")
	for _, p := range []string{containerd, ctr} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s is missing: run make deps", p)
		}
	}
	ctx := context.Background()
	// Unix socket paths must stay short: not under t.TempDir().
	dir, err := os.MkdirTemp("", "kctr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "c.sock")
	cfg := "version = 3\nroot = \"" + dir + "/root\"\nstate = \"" + dir + "/state\"\n[grpc]\n  address = \"" + sock + "\"\n[ttrpc]\n  address = \"" + sock + ".ttrpc\"\n"
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	cmd := exec.Command(containerd, "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 100 {
			t.Fatalf("containerd did not come up in 10s:\n%s", logBuf.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	runCtr := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(ctr, append([]string{"-a", sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	files, err := images.BusyboxFiles("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	pause, err := images.BuildLinuxImage(ctx, files, ocispec.ImageConfig{Entrypoint: []string{"/bin/sleep", "2147483647"}}, ocispec.Platform{})
	if err != nil {
		t.Fatal(err)
	}
	wasm, err := images.BuildWasmImage(ctx, fixtures.Hello, "hello.wasm")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		img  *images.MemoryImage
		ref  string
		kind images.Kind
		ctr  []string
	}{
		{"pause image", pause, "registry.k8s.io/pause:3.10.2", images.KindLinux, nil},
		{"wasm image", wasm, "example.com/hello:v1", images.KindWasm, []string{"--all-platforms"}},
	}
	s := openStore(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := filepath.Join(dir, "in.tar")
			if err := tc.img.WriteArchiveFile(in, tc.ref); err != nil {
				t.Fatal(err)
			}
			runCtr(append(append([]string{"images", "import"}, tc.ctr...), in)...)
			if ls := runCtr("images", "ls", "-q"); !strings.Contains(ls, tc.ref) {
				t.Fatalf("ctr images ls lacks %s:\n%s", tc.ref, ls)
			}
			out := filepath.Join(dir, "out.tar")
			// --local: through the transfer API, ctr v2.4.2 can exit before
			// the streamed archive is fully written when the machine is
			// loaded (seen here: a truncated tar, "unexpected EOF"); the
			// local export writes the file itself before it returns.
			exportArgs := []string{"images", "export", "--local"}
			if tc.kind == images.KindWasm {
				exportArgs = append(exportArgs, "--platform", "wasi/wasm")
			}
			runCtr(append(exportArgs, out, tc.ref)...)
			w, err := s.Resolve(ctx, out)
			if err != nil {
				t.Fatalf("resolve ctr export: %v", err)
			}
			if w.ManifestDigest != tc.img.Root.Digest || w.Metadata.Kind != tc.kind {
				t.Errorf("exported image resolved to %s/%s, want %s/%s", w.ManifestDigest, w.Metadata.Kind, tc.img.Root.Digest, tc.kind)
			}
			if _, err := s.Get(ctx, tc.ref); err != nil {
				t.Errorf("export not named %s in the store: %v", tc.ref, err)
			}
		})
	}
}
