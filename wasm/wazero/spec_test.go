package wazero_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata")

// TestWASISpec runs the WASISpec fixture (C, through wasi-libc) with each
// WASI host and compares its report with the committed one:
// testdata/wasispec.golden is the specification's answer, which kuasar's
// host must give; testdata/wasispec.wazero.golden records where wazero's own
// host departs from it, so that a change in either shows up here: readlink
// into a small buffer fails with ERANGE, pwrite on an append file fails,
// a directory fd can be read and seeked, stdout is no character device,
// poll misses stdin and stdout, fd_fdstat_set_rights is ENOSYS (rights are
// not kept), shutdown on a file is EBADF, fd_renumber over a preopen is
// ENOTSUP. (A failed check prints the errno left by the last call that
// set one, which need not be the check's own.)
func TestWASISpec(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   []wazero.Option
		golden string
	}{
		{"kuasar", nil, "wasispec.golden"},
		{"wazero", []wazero.Option{wazero.WithWazeroWASI()}, "wasispec.wazero.golden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, tc.opts...)
			m := compile(t, e, fixtures.WASISpec)
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer pr.Close()
			pw.WriteString("ping")
			pw.Close()
			var out, errb bytes.Buffer
			code, err := m.Run(context.Background(), wasm.RunConfig{
				Args:   []string{"wasispec", "/data"},
				Mounts: []wasm.Mount{{HostPath: t.TempDir(), GuestPath: "/data"}},
				Stdin:  pr, Stdout: &out, Stderr: &errb,
			})
			if err != nil || code != 0 {
				t.Fatalf("exit %d, %v, stderr %q", code, err, errb.String())
			}
			golden := filepath.Join("testdata", tc.golden)
			if *updateGolden {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != string(want) {
				t.Errorf("report differs from %s:\n%s\nwant:\n%s", golden, out.String(), want)
			}
		})
	}
}

// TestNULInArgs: WASI passes arguments and environment as NUL-terminated
// strings, so one holding a NUL byte is refused before the guest starts.
func TestNULInArgs(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, fixtures.Hello)
	for _, cfg := range []wasm.RunConfig{{Args: []string{"a\x00b"}}, {Env: []string{"K=a\x00b"}}} {
		if _, err := m.Run(context.Background(), cfg); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%+v: %v, want InvalidArgument", cfg, err)
		}
	}
}
