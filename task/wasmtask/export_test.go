package wasmtask

import (
	"context"
	"time"
)

// WaitIdle and Records give the external tests what no other package
// needs: waiting for every process to end, and the records a checkpoint
// would hold.
func WaitIdle(ctx context.Context, s *Service) error { return s.waitIdle(ctx) }

// Records returns s's task records.
func Records(s *Service) []TaskRecord { return s.records() }

// SetStableAfter sets how old a module file must be to be cached, until the
// test ends.
func SetStableAfter(t interface{ Cleanup(func()) }, d time.Duration) {
	old := stableAfter
	stableAfter = d
	t.Cleanup(func() { stableAfter = old })
}
