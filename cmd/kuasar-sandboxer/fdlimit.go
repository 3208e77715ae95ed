package main

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// openFileBudget raises the process's soft RLIMIT_NOFILE to its hard limit
// (Go's runtime does the same at start; doing it here keeps the figure
// right whatever the runtime does) and returns how many files Wasm guests
// may hold together: the soft limit minus reserve, which stays for the
// sandboxer's own API and task sockets, records and containerd connections,
// so that no guest can make them fail with EMFILE.
func openFileBudget(ctx context.Context, reserve int) (int, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	if rl.Cur < rl.Max {
		raised := rl
		raised.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &raised); err != nil {
			log.G(ctx).WithError(err).WithField("soft", rl.Cur).WithField("hard", rl.Max).Warn("could not raise RLIMIT_NOFILE to its hard limit")
		} else {
			rl = raised
		}
	}
	soft := min(rl.Cur, 1<<30)
	if soft <= uint64(reserve) {
		return 0, fmt.Errorf("RLIMIT_NOFILE is %d, not more than sandboxer.fd_reserve (%d): raise the limit (LimitNOFILE= in the systemd unit) or lower fd_reserve: %w", rl.Cur, reserve, errdefs.ErrFailedPrecondition)
	}
	budget := int(soft) - reserve
	log.G(ctx).WithField("rlimit_nofile", soft).WithField("reserve", reserve).WithField("wasm_budget", budget).Info("open-file budget for Wasm guests")
	return budget, nil
}
