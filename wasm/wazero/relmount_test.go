package wazero_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

// TestRelativeGuestPath runs a wasi-libc guest with mounts named as
// wasmtime's --dir names them: "." (the guest's current directory) and a
// relative "data", on both WASI hosts. The guest lists "." and reads
// through the relative names; a name starting with ".." is refused.
func TestRelativeGuestPath(t *testing.T) {
	for _, engine := range []struct {
		name string
		opts []wazero.Option
	}{
		{"kuasar WASI", nil},
		{"wazero WASI", []wazero.Option{wazero.WithWazeroWASI()}},
	} {
		t.Run(engine.name, func(t *testing.T) {
			m := compile(t, newEngine(t, engine.opts...), fixtures.WASI)
			dot, data := t.TempDir(), t.TempDir()
			for dir, name := range map[string]string{dot: "here.txt", data: "d.txt"} {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			mounts := []wasm.Mount{{HostPath: dot, GuestPath: "."}, {HostPath: data, GuestPath: "data"}}
			for _, tc := range []struct {
				args []string
				want string
			}{
				{[]string{"w", "ls", "."}, "here.txt\n"},
				{[]string{"w", "read", "here.txt"}, "here.txt"},
				{[]string{"w", "read", "data/d.txt"}, "d.txt"},
			} {
				if r := run(t, m, wasm.RunConfig{Args: tc.args, Mounts: mounts}); r.code != 0 || r.stdout != tc.want {
					t.Errorf("%v: code %d, stdout %q, stderr %q; want %q", tc.args[1:], r.code, r.stdout, r.stderr, tc.want)
				}
			}
			_, err := m.Run(t.Context(), wasm.RunConfig{Args: []string{"w", "ls", "."}, Mounts: []wasm.Mount{{HostPath: data, GuestPath: "../x"}}})
			if err == nil {
				t.Error(`mount named "../x": ran; want it refused`)
			}
		})
	}
}
