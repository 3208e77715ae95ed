// Package crashpoint lets a test SIGKILL a kuasar process at a named point
// of its work, to prove that whatever it was doing survives a crash there
// (the sandboxer's kill-loop test). The point is chosen by the environment
// variable KUASAR_CRASH_AT, read once at start-up:
//
//	KUASAR_CRASH_AT=<name>      kill at the first Hit(name)
//	KUASAR_CRASH_AT=<name>#<n>  kill at the n-th Hit(name)
//
// Unset (always, outside tests), Hit is a comparison with an empty string.
// The process kills itself with SIGKILL: no deferred function, no signal
// handler and no flush runs, exactly as when the OOM killer or an operator's
// kill -9 strikes.
package crashpoint

import (
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Env names the crash point to kill at.
const Env = "KUASAR_CRASH_AT"

var (
	target string
	nth    int64 = 1
	hits   atomic.Int64
)

func init() { target, nth = parse(os.Getenv(Env)) }

// parse splits "name#n"; n defaults to 1.
func parse(v string) (string, int64) {
	name, count, ok := strings.Cut(v, "#")
	if !ok {
		return name, 1
	}
	n, err := strconv.ParseInt(count, 10, 64)
	if err != nil || n < 1 {
		n = 1
	}
	return name, n
}

// Hit marks that the process reached point name; it SIGKILLs the process
// when name is the crash point (and this is its n-th hit).
func Hit(name string) {
	if target == "" || name != target {
		return
	}
	if hits.Add(1) < nth {
		return
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is delivered before this returns; never go on
}
