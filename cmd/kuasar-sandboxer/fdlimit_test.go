package main

import (
	"context"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func TestOpenFileBudget(t *testing.T) {
	ctx := context.Background()
	budget, err := openFileBudget(ctx, 256)
	if err != nil {
		t.Fatal(err)
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur != rl.Max {
		t.Errorf("soft RLIMIT_NOFILE %d after start, hard %d: want it raised", rl.Cur, rl.Max)
	}
	if want := int(min(rl.Cur, 1<<30)) - 256; budget != want {
		t.Errorf("budget %d; want the soft limit minus the reserve, %d", budget, want)
	}
	if _, err := openFileBudget(ctx, int(rl.Cur)); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("reserve = the whole limit: %v; want FailedPrecondition", err)
	}
}
