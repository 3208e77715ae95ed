package wasm

import (
	"errors"
	"sync/atomic"
)

// ErrOutOfMemory is wrapped (with errdefs.ErrResourceExhausted) in the
// error of a run that could not start for lack of memory: its minimum is
// over the limit, or it does not fit the budget. The task service reports
// such runs as OOM, unlike runs refused other resources (open files).
var ErrOutOfMemory = errors.New("out of memory")

// MemoryBudget bounds the sum of the linear memories of many instances: a
// pod's memory limit shared by its containers. Engines charge it on every
// memory.grow (and at instantiation) and refund it when an instance ends; a
// grow that would pass the limit is refused (memory.grow returns -1 to the
// guest) even when the instance's own MemoryLimit would allow it.
//
// It is safe for concurrent use. The zero value has no limit.
type MemoryBudget struct {
	limit atomic.Uint64
	used  atomic.Uint64
}

// NewMemoryBudget returns a budget of limit bytes; 0 means no limit (only
// the usage is counted).
func NewMemoryBudget(limit uint64) *MemoryBudget {
	b := &MemoryBudget{}
	b.limit.Store(limit)
	return b
}

// Reserve charges n bytes and reports whether they fit under the limit; on
// false nothing was charged. A nil budget accepts everything.
func (b *MemoryBudget) Reserve(n uint64) bool {
	if b == nil || n == 0 {
		return true
	}
	for {
		used := b.used.Load()
		if lim := b.limit.Load(); lim > 0 && (used+n > lim || used+n < used) {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// Release refunds n bytes charged by Reserve. A nil budget ignores it.
func (b *MemoryBudget) Release(n uint64) {
	if b == nil || n == 0 {
		return
	}
	b.used.Add(^(n - 1))
}

// SetLimit changes the limit (0: none). Memory already charged stays
// charged: a lower limit only refuses further grows until enough was
// released.
func (b *MemoryBudget) SetLimit(limit uint64) { b.limit.Store(limit) }

// Limit is the current limit in bytes, 0 when there is none.
func (b *MemoryBudget) Limit() uint64 {
	if b == nil {
		return 0
	}
	return b.limit.Load()
}

// Used is the memory charged now, in bytes.
func (b *MemoryBudget) Used() uint64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}
