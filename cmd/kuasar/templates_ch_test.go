package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kuasar-go/kuasar/internal/testenv/chfake"
)

// TestVMTemplatesCloudHypervisor: with Cloud Hypervisor as the default
// hypervisor, `kuasar vm-templates build` builds its template,
// `kuasar vm-templates` lists it as Cloud Hypervisor's, `kuasar check`
// counts it by hypervisor, and `kuasar vm-templates rm` removes it.
// Cloud Hypervisor cannot run here: the VMM (and virtiofsd) is this test
// binary re-executed as the fake of internal/testenv/chfake, which
// checks every request against Cloud Hypervisor's OpenAPI description
// (verified against that specification and the fake only).
func TestVMTemplatesCloudHypervisor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("Cloud Hypervisor templates need root (mount namespaces)")
	}
	chfake.LoadOpenAPI(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(chfake.Env, "1") // for the VMM processes the CLI starts
	// Short: the template build's sockets live below the state directory.
	state, err := os.MkdirTemp("", "kcht")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	cfg := filepath.Join(state, "config.toml")
	conf := "[hypervisor]\ndefault = \"cloud-hypervisor\"\n[hypervisor.cloud-hypervisor]\n" +
		"path = \"" + self + "\"\nkernel = \"" + self + "\"\ninitramfs = \"" + self + "\"\nrootfs_mode = \"virtiofs\"\nvirtiofsd = \"" + self + "\"\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUASAR_CONFIG", cfg)
	cli := func(args ...string) (string, int) {
		var out, errs bytes.Buffer
		code := runCLI(context.Background(), &cliEnv{stdout: &out, stderr: &errs, stateDir: state}, args)
		if errs.Len() > 0 {
			t.Logf("kuasar %s: %s", strings.Join(args, " "), errs.String())
		}
		return out.String(), code
	}
	out, code := cli("vm-templates", "build")
	if code != 0 || strings.Count(out, "\n") != 1 {
		t.Fatalf("vm-templates build: exit %d, printed %q", code, out)
	}
	dir := strings.TrimSpace(out)
	out, code = cli("vm-templates")
	if code != 0 || out != dir+"\tcloud-hypervisor\n" {
		t.Errorf("vm-templates: exit %d, listed %q, want %q", code, out, dir+"\tcloud-hypervisor\n")
	}
	out, _ = cli("check", "--config", cfg)
	if want := "; 1 in " + filepath.Join(state, "vm-templates") + " (cloud-hypervisor 1)"; !strings.Contains(out, want) {
		t.Errorf("check does not count the template (%q):\n%s", want, out)
	}
	if _, code := cli("vm-templates", "rm"); code != 0 {
		t.Fatalf("vm-templates rm: exit %d", code)
	}
	if out, _ := cli("vm-templates"); out != "" {
		t.Errorf("templates left after rm: %q", out)
	}
}
