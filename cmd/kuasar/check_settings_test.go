package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckPrintsSettings: `kuasar check` prints the effective value of
// every path the sandboxer lets a flag move, and whether it comes from the
// configuration file or the embedded defaults.
func TestCheckPrintsSettings(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	sock := filepath.Join(dir, "c.sock")
	if err := os.WriteFile(cfg, []byte("[sandboxer]\ncontainerd_address = \""+sock+"\"\n[wasm]\ncache_dir = \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	env := &cliEnv{stdout: &out, stderr: &out, stateDir: t.TempDir()}
	runCLI(context.Background(), env, []string{"check", "--config", cfg})
	for _, want := range []string{
		"ok    sandboxer.containerd_address " + sock + " (" + cfg + ")",
		`ok    wasm.cache_dir         "" (` + cfg + ")",
		"ok    sandboxer.listen       /run/kuasar/sandboxer.sock (embedded defaults)",
		"ok    sandboxer.containerd_ttrpc_address /run/containerd/containerd.sock.ttrpc (embedded defaults)",
		"ok    hypervisor.qemu.kernel /var/lib/kuasar/vmlinux (embedded defaults)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
