package wazero

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/wasm"
)

// Linear memories are reserved, not allocated: each one gets the address
// space of its largest allowed size once, as an inaccessible private mapping
// (mmap PROT_NONE, MAP_NORESERVE), and memory.grow makes the new pages
// readable and writable with mprotect. The kernel then commits a page when
// the guest first touches it. So host memory stays close to what the guest
// really uses, a grow never copies (a copying allocator held the old and new
// buffers at once, twice the guest's memory at the worst moment), and the
// backing array never moves, as wazero's experimental.LinearMemory contract
// asks for memories that may be shared.

// A few small memories are kept for reuse once their run ended, cleared:
// mapping, faulting in and unmapping fresh pages (with the TLB shootdowns an
// munmap costs on a multi-threaded process) doubled the cost of a short run.
// Only memories of at most poolMaxBytes are kept, poolMaxEntries of them per
// engine, so the memory held idle stays under poolMaxEntries*poolMaxBytes.
const (
	poolMaxBytes   = 1 << 20
	poolMaxEntries = 16
)

// memPool holds cleared reservations for reuse, by reserved size.
type memPool struct {
	mu     sync.Mutex
	free   map[uint64][]pooledMemory
	n      int
	closed bool
}

type pooledMemory struct {
	base      unsafe.Pointer
	committed uint64
}

// get returns a cleared reservation of reserved bytes, if one is kept.
func (p *memPool) get(reserved uint64) (pooledMemory, bool) {
	if p == nil {
		return pooledMemory{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.free[reserved]
	if len(l) == 0 {
		return pooledMemory{}, false
	}
	e := l[len(l)-1]
	p.free[reserved] = l[:len(l)-1]
	p.n--
	return e, true
}

// put keeps a cleared reservation and reports whether it did.
func (p *memPool) put(reserved uint64, e pooledMemory) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.n >= poolMaxEntries {
		return false
	}
	if p.free == nil {
		p.free = map[uint64][]pooledMemory{}
	}
	p.free[reserved] = append(p.free[reserved], e)
	p.n++
	return true
}

// close unmaps every kept reservation; later puts are refused.
func (p *memPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for reserved, l := range p.free {
		for _, e := range l {
			_ = unix.MunmapPtr(e.base, uintptr(reserved))
		}
	}
	p.free, p.n = nil, 0
}

// commitStep is the least address space a grow makes accessible.
const commitStep = 1 << 20

// osPageSize is the host page size mprotect works in.
var osPageSize = uint64(os.Getpagesize())

func roundUpPage(n uint64) uint64 { return (n + osPageSize - 1) &^ (osPageSize - 1) }

// instanceView is the wasm.Instance a RunConfig.Started callback gets: the
// allocator keeps the memory size in it, so that another goroutine can read
// it while the guest runs.
type instanceView struct {
	memBytes atomic.Uint64
}

// MemoryBytes implements wasm.Instance.
func (v *instanceView) MemoryBytes() uint64 { return v.memBytes.Load() }

// runMemory is the memory allocator of one Run. It owns every linear memory
// it allocates until release, called when Run returns: wazero's Free may
// come from another goroutine (a runtime Close while the guest still runs),
// and unmapping memory that compiled code is still using would crash the
// process, so Free only marks the memory and release unmaps it once the
// guest's goroutine is done with it. Memories of an instantiation that
// failed half-way, which wazero never frees, are released the same way.
type runMemory struct {
	pool    *memPool
	limit   uint64 // per-memory cap in bytes (RunConfig.MemoryLimit); 0: the module's maximum
	budget  *wasm.MemoryBudget
	view    *instanceView
	refused func(size uint64)

	mems []*reservedMemory
	// startErr says why a memory could not get its initial size, for the
	// error Run returns.
	startErr error
}

var _ experimental.MemoryAllocator = (*runMemory)(nil)

// Allocate implements experimental.MemoryAllocator: it reserves the address
// space of the memory's largest allowed size.
func (r *runMemory) Allocate(_, max uint64) experimental.LinearMemory {
	lim := max
	if r.limit > 0 && r.limit < lim {
		lim = r.limit
	}
	m := &reservedMemory{run: r, limit: lim}
	reserve := roundUpPage(lim)
	if e, ok := r.pool.get(reserve); ok {
		m.base, m.reserved, m.committed = e.base, reserve, e.committed
	} else if reserve > 0 {
		p, err := unix.MmapPtr(-1, 0, nil, uintptr(reserve), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			r.startErr = fmt.Errorf("reserving %s of address space for linear memory: %w: lower the memory limit or raise vm.max_map_count", formatBytes(reserve), err)
			m.limit = 0
		} else {
			m.base, m.reserved = p, reserve
		}
	}
	r.mems = append(r.mems, m)
	return m
}

// release unmaps every memory of the run and refunds the budget. It is
// called once the instance is closed and its goroutine no longer runs guest
// code.
func (r *runMemory) release() {
	for _, m := range r.mems {
		m.release()
	}
	r.mems = nil
}

// reservedMemory is one linear memory: reserved bytes of address space at
// base, of which committed are readable and writable and size are the
// guest's.
type reservedMemory struct {
	run       *runMemory
	base      unsafe.Pointer
	reserved  uint64
	committed uint64
	size      uint64
	limit     uint64
	started   bool
}

var _ experimental.LinearMemory = (*reservedMemory)(nil)

// Reallocate implements experimental.LinearMemory: it makes size bytes
// accessible and returns them, at the same address every time. A size past
// the memory's limit or the run's budget returns nil, which wazero turns
// into -1 from memory.grow.
func (m *reservedMemory) Reallocate(size uint64) []byte {
	first := !m.started
	m.started = true
	if size <= m.size {
		return m.bytes(size)
	}
	if size > m.limit {
		return m.refuse(first, size, fmt.Errorf("memory limit %s", formatBytes(m.limit)))
	}
	delta := size - m.size
	if !m.run.budget.Reserve(delta) {
		return m.refuse(first, size, fmt.Errorf("the sandbox's memory limit %s (%s in use by its instances)", formatBytes(m.run.budget.Limit()), formatBytes(m.run.budget.Used())))
	}
	if size > m.committed {
		// Open up more than asked, doubling, so a guest growing one page
		// at a time makes few mprotect calls. This costs no host memory:
		// pages are committed when touched, and the guest can only touch
		// its size (wazero bounds-checks every access against it).
		need := min(m.reserved, roundUpPage(max(size, 2*m.committed, commitStep)))
		region := unsafe.Slice((*byte)(unsafe.Add(m.base, m.committed)), need-m.committed)
		if err := unix.Mprotect(region, unix.PROT_READ|unix.PROT_WRITE); err != nil {
			m.run.budget.Release(delta)
			return m.refuse(first, size, fmt.Errorf("committing memory: %w", err))
		}
		m.committed = need
	}
	m.size = size
	m.run.view.memBytes.Add(delta)
	return m.bytes(size)
}

func (m *reservedMemory) bytes(size uint64) []byte {
	if m.base == nil {
		return []byte{}
	}
	return unsafe.Slice((*byte)(m.base), m.reserved)[:size:size]
}

// refuse reports a refused size: at instantiation it becomes Run's error,
// afterwards the guest sees memory.grow fail and the caller is told.
func (m *reservedMemory) refuse(first bool, size uint64, why error) []byte {
	if first {
		if m.run.startErr == nil {
			m.run.startErr = fmt.Errorf("the module's initial memory of %s does not fit: %w", formatBytes(size), why)
		}
		return nil
	}
	if m.run.refused != nil {
		m.run.refused(size)
	}
	return nil
}

// Free implements experimental.LinearMemory. It does nothing: the memory
// stays mapped until the run releases it (see runMemory).
func (m *reservedMemory) Free() {}

func (m *reservedMemory) release() {
	if m.base != nil && m.size <= poolMaxBytes && m.run.pool != nil {
		clear(unsafe.Slice((*byte)(m.base), m.size))
		if m.run.pool.put(m.reserved, pooledMemory{base: m.base, committed: m.committed}) {
			m.base = nil
		}
	}
	if m.base != nil {
		// Cannot fail for a range this type mapped; a failure would only
		// leak address space.
		_ = unix.MunmapPtr(m.base, uintptr(m.reserved))
		m.base = nil
	}
	if m.size > 0 {
		m.run.budget.Release(m.size)
		m.run.view.memBytes.Add(^(m.size - 1))
	}
	m.size, m.committed, m.reserved, m.limit = 0, 0, 0, 0
}
