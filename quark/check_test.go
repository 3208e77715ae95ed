package quark

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// TestCheck is the contract of the start-up checks: each failure is a
// FailedPrecondition whose message names what to fix.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "quark")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{"DebugLevel":"Error","ShimMode":false,"Sandboxed":true}`)
	k := func(rel string) string { return write("osrelease-"+rel, rel+"\n") }
	for _, tc := range []struct {
		name      string
		cfg       Config
		osrelease string
		want      []string // substrings of the error; nil: passes
	}{
		{"ready", Config{Binary: bin, ConfigFile: good}, k("6.1.0-18-amd64"), nil},
		{"exactly 5.15", Config{Binary: bin, ConfigFile: good}, k("5.15.0"), nil},
		{"no binary", Config{Binary: filepath.Join(dir, "absent"), ConfigFile: good}, k("6.1.0"), []string{"quark binary", "install Quark", "[quark]"}},
		{"binary not in PATH", Config{Binary: "quark-not-installed-here", ConfigFile: good}, k("6.1.0"), []string{"quark-not-installed-here", "not found"}},
		{"no config file", Config{Binary: bin, ConfigFile: filepath.Join(dir, "none.json")}, k("6.1.0"), []string{"none.json", "config_file"}},
		{"not JSON", Config{Binary: bin, ConfigFile: write("bad.json", "Sandboxed = true")}, k("6.1.0"), []string{"not a JSON object", "fix the file"}},
		{"Sandboxed false", Config{Binary: bin, ConfigFile: write("unsandboxed.json", `{"Sandboxed":false,"ShimMode":false}`)}, k("6.1.0"), []string{`"Sandboxed" is false`, `set "Sandboxed": true`}},
		{"Sandboxed missing", Config{Binary: bin, ConfigFile: write("nosandboxed.json", `{"ShimMode":false}`)}, k("6.1.0"), []string{`"Sandboxed" is missing`, `set "Sandboxed": true`}},
		{"ShimMode true", Config{Binary: bin, ConfigFile: write("shim.json", `{"Sandboxed":true,"ShimMode":true}`)}, k("6.1.0"), []string{`"ShimMode" is true`, `set "ShimMode": false`}},
		{"Sandboxed not a boolean", Config{Binary: bin, ConfigFile: write("str.json", `{"Sandboxed":"yes","ShimMode":false}`)}, k("6.1.0"), []string{"not a boolean", `set "Sandboxed": true`}},
		{"kernel 5.14", Config{Binary: bin, ConfigFile: good}, k("5.14.21"), []string{"kernel 5.14.21 is older than 5.15", "upgrade the host's kernel"}},
		{"kernel 4.19", Config{Binary: bin, ConfigFile: good}, k("4.19.0-26-amd64"), []string{"older than 5.15"}},
		{"kernel unreadable", Config{Binary: bin, ConfigFile: good}, k("garbage"), []string{"cannot be read as MAJOR.MINOR"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := New(tc.cfg, WithKernelReleaseFile(tc.osrelease)).Check()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check passed, want an error")
			}
			if !errdefs.IsFailedPrecondition(err) {
				t.Errorf("error kind: %v is not FailedPrecondition", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestParseRelease(t *testing.T) {
	for _, tc := range []struct {
		in           string
		major, minor int
		ok           bool
	}{
		{"6.18.44-fc-v1294", 6, 18, true},
		{"5.15", 5, 15, true},
		{"5.15rc1", 5, 15, true},
		{"6", 0, 0, false},
		{"x.y", 0, 0, false},
	} {
		ma, mi, ok := parseRelease(tc.in)
		if ma != tc.major || mi != tc.minor || ok != tc.ok {
			t.Errorf("parseRelease(%q) = %d, %d, %v; want %d, %d, %v", tc.in, ma, mi, ok, tc.major, tc.minor, tc.ok)
		}
	}
}
