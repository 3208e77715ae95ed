package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestExplicitMissingConfig(t *testing.T) {
	err := run([]string{"--config", filepath.Join(t.TempDir(), "absent.toml")})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("explicit missing config: %v", err)
	}
}

func TestUnknownConfigKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(p, []byte("[sandboxer]\nlisten_addr = \"x\"\n"), 0o600)
	if err := run([]string{"--config", p}); err == nil || !strings.Contains(err.Error(), "sandboxer.listen_addr") {
		t.Fatalf("unknown key: %v", err)
	}
}

// TestServeAndSIGTERM runs the real binary: the socket appears with mode
// 0600 and SIGTERM ends the process cleanly, removing it.
func TestServeAndSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir, _ := os.MkdirTemp("", "kst")
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "kuasar-sandboxer")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "k.sock")
	cfg := filepath.Join(dir, "c.toml")
	os.WriteFile(cfg, []byte("[wasm]\ncache_dir = \"\"\n[sandboxer]\ncontainerd_address = \""+dir+"/none.sock\"\ncontainerd_ttrpc_address = \""+dir+"/none.ttrpc\"\n"), 0o600)
	cmd := exec.Command(bin, "--config", cfg, "--listen", sock, "--state-dir", filepath.Join(dir, "state"), "--log-level", "warn")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var fi os.FileInfo
	for i := 0; i < 200; i++ {
		if fi, _ = os.Stat(sock); fi != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if fi == nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %v", fi)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left after SIGTERM: %v", err)
	}
}
