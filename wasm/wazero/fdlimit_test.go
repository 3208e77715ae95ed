package wazero_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

// TestOpenFileLimits: a guest opening files until refused gets EMFILE at its
// own limit (counting stdio and its preopened mount, as RLIMIT_NOFILE counts
// every fd) and ENFILE at the engine's budget, and everything it held is
// uncounted when it ends.
func TestOpenFileLimits(t *testing.T) {
	for _, tc := range []struct {
		name       string
		budget     int
		limit      int
		wantOpened int
		wantErrno  string
	}{
		{name: "per-instance limit", limit: 64, wantOpened: 64 - 3 - 1, wantErrno: "EMFILE"},
		{name: "low limit", limit: 5, wantOpened: 1, wantErrno: "EMFILE"},
		{name: "engine budget first", budget: 40, limit: 1024, wantOpened: 40 - 1, wantErrno: "ENFILE"},
		{name: "limit under budget", budget: 100, limit: 50, wantOpened: 50 - 3 - 1, wantErrno: "EMFILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []wazero.Option
			if tc.budget > 0 {
				opts = append(opts, wazero.WithOpenFileBudget(tc.budget))
			}
			e := newEngine(t, opts...)
			m := compile(t, e, fixtures.FdBomb)
			r := run(t, m, wasm.RunConfig{Args: []string{"fdbomb", "0"},
				Mounts: []wasm.Mount{{HostPath: t.TempDir(), GuestPath: "/"}}, OpenFileLimit: tc.limit})
			want := fmt.Sprintf("opened=%d errno=%s", tc.wantOpened, tc.wantErrno)
			if r.err != nil || r.code != 0 || strings.TrimSpace(r.stdout) != want {
				t.Fatalf("fdbomb: exit %d, %v, stdout %q; want %q", r.code, r.err, r.stdout, want)
			}
			if n := wazero.OpenFiles(e); n != 0 {
				t.Errorf("engine counts %d open files after the run; want 0", n)
			}
		})
	}
}

// TestOpenFileBudgetNeighbour: while one guest holds the engine's whole
// budget, another guest's open fails with ENFILE, and once the first ended
// the other opens files again.
func TestOpenFileBudgetNeighbour(t *testing.T) {
	e := newEngine(t, wazero.WithOpenFileBudget(30))
	m := compile(t, e, fixtures.FdBomb)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	held := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		cfg := wasm.RunConfig{Args: []string{"fdbomb", "60"}, Mounts: []wasm.Mount{{HostPath: dir, GuestPath: "/"}}}
		cfg.Stdout = writerFunc(func(p []byte) { held <- string(p) })
		m.Run(ctx, cfg)
	}()
	if got := strings.TrimSpace(<-held); got != "opened=29 errno=ENFILE" {
		t.Fatalf("holder: %q", got)
	}
	w := compile(t, e, fixtures.WASI)
	cfg := wasm.RunConfig{Args: []string{"wasi", "ls", "/"}, Mounts: []wasm.Mount{{HostPath: dir, GuestPath: "/"}}}
	if r := run(t, w, cfg); !errdefs.IsResourceExhausted(r.err) || errors.Is(r.err, wasm.ErrOutOfMemory) || !strings.Contains(r.err.Error(), "ENFILE") {
		t.Errorf("neighbour started while the budget was spent: exit %d, %v; want ResourceExhausted naming ENFILE", r.code, r.err)
	}
	cancel()
	<-done
	if r := run(t, w, cfg); r.code != 0 || r.err != nil {
		t.Errorf("neighbour after the holder ended: exit %d, %v, %s", r.code, r.err, r.stderr)
	}
}
