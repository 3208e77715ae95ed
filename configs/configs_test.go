package configs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/kuasar-go/kuasar/configs"
	"github.com/kuasar-go/kuasar/sandboxer/config"
)

func TestSandboxerDefaultsDecodeStrictly(t *testing.T) {
	// config.Default refuses unknown keys, so this also checks that every
	// key in configs/config.toml is one the sandboxer reads.
	if _, err := config.Default(); err != nil {
		t.Fatal(err)
	}
}

func TestContainerdSnippet(t *testing.T) {
	var v struct {
		Version      int `toml:"version"`
		ProxyPlugins map[string]struct {
			Type    string `toml:"type"`
			Address string `toml:"address"`
		} `toml:"proxy_plugins"`
		Plugins map[string]any `toml:"plugins"`
	}
	if _, err := toml.Decode(string(configs.ContainerdSnippet), &v); err != nil {
		t.Fatal(err)
	}
	def, _ := config.Default()
	p := v.ProxyPlugins["kuasar"]
	if v.Version != 4 || p.Type != "sandbox" || p.Address != def.Sandboxer.Listen {
		t.Fatalf("snippet: version %d, proxy plugin %+v (want version 4, type sandbox, address %s)", v.Version, p, def.Sandboxer.Listen)
	}
	cri, _ := v.Plugins["io.containerd.cri.v1.runtime"].(map[string]any)
	rts, _ := cri["containerd"].(map[string]any)["runtimes"].(map[string]any)
	for _, h := range []string{"kuasar", "kuasar-vm"} {
		rt, _ := rts[h].(map[string]any)
		if rt["runtime_type"] != "io.containerd.kuasar.v1" || rt["sandboxer"] != "kuasar" {
			t.Fatalf("runtime handler %s: %v", h, rt)
		}
	}
}

func TestRuntimeClassHandlers(t *testing.T) {
	b, err := os.ReadFile("runtimeclass.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"handler: kuasar\n", "handler: kuasar-vm\n"} {
		if !strings.Contains(string(b), h) {
			t.Fatalf("runtimeclass.yaml lacks %q", h)
		}
	}
}

// TestSystemdUnit checks the unit with systemd-analyze (its ExecStart
// pointed at a binary that exists here).
func TestSystemdUnit(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze not found: apt-get install systemd: %v", err)
	}
	b, err := os.ReadFile("kuasar-sandboxer.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.Replace(string(b), "/usr/local/bin/kuasar-sandboxer", "/bin/true", 1)
	p := filepath.Join(t.TempDir(), "kuasar-sandboxer.service")
	if err := os.WriteFile(p, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sa, "verify", p).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestPrivateContainerd decodes the private stack's containerd config and
// checks that every path containerd would otherwise take from the system is
// moved under the stack, the shipped runtimes name its sandboxer, and the
// runc handler is there only when asked for.
func TestPrivateContainerd(t *testing.T) {
	for _, runc := range []bool{false, true} {
		p := configs.PrivateContainerd{Dir: "/x", GRPC: "/x/c.sock", TTRPC: "/x/c.ttrpc", Sandboxer: "/x/k.sock", Runc: runc}
		var v struct {
			Root, State  string
			ProxyPlugins map[string]struct{ Address string } `toml:"proxy_plugins"`
			Plugins      map[string]map[string]any           `toml:"plugins"`
		}
		if _, err := toml.Decode(p.Config(), &v); err != nil {
			t.Fatalf("runc=%v: %v\n%s", runc, err, p.Config())
		}
		got := []string{v.Root, v.State, v.ProxyPlugins["kuasar"].Address,
			v.Plugins["io.containerd.server.v1.grpc"]["address"].(string),
			v.Plugins["io.containerd.server.v1.ttrpc"]["address"].(string),
			v.Plugins["io.containerd.shim.v1.manager"]["socket_dir"].(string)}
		want := []string{"/x/root", "/x/state", "/x/k.sock", "/x/c.sock", "/x/c.ttrpc", "/x/s"}
		if !slices.Equal(got, want) {
			t.Errorf("runc=%v: paths %q, want %q", runc, got, want)
		}
		rts := v.Plugins["io.containerd.cri.v1.runtime"]["containerd"].(map[string]any)["runtimes"].(map[string]any)
		if _, ok := rts["runc"]; ok != runc {
			t.Errorf("runc=%v: runc handler present: %v", runc, ok)
		}
		if _, ok := rts["kuasar"]; !ok {
			t.Errorf("runc=%v: no kuasar handler", runc)
		}
	}
}
