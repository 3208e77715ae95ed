package wasmtask

import (
	"sync"

	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/runspec"
)

// moduleCacheSize bounds how many module files a ModuleCache remembers.
const moduleCacheSize = 256

// ModuleCache remembers which compiled module each module file (by its
// runspec.FileID: device, inode, size, mtime and ctime) was compiled into,
// so that a Create whose module file did not change since an earlier one
// skips reading and hashing it. The engine still holds the compiled
// modules (by digest); the cache only saves the read and the hash. One
// cache serves one engine; share it between the services of the sandboxes
// that run on that engine (WithModuleCache). See docs/rationale/task.md for
// why a guest cannot make it serve a module the file did not hold.
type ModuleCache struct {
	mu    sync.Mutex
	m     map[runspec.FileID]wasm.Module
	order []runspec.FileID // insertion order, for eviction
	next  int
}

// NewModuleCache returns an empty cache.
func NewModuleCache() *ModuleCache {
	return &ModuleCache{m: map[runspec.FileID]wasm.Module{}}
}

func (c *ModuleCache) get(id runspec.FileID) wasm.Module {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id]
}

// put remembers m for id, evicting the oldest entry when full.
func (c *ModuleCache) put(id runspec.FileID, m wasm.Module) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[id]; ok {
		return
	}
	if len(c.order) < moduleCacheSize {
		c.order = append(c.order, id)
	} else {
		delete(c.m, c.order[c.next])
		c.order[c.next] = id
		c.next = (c.next + 1) % moduleCacheSize
	}
	c.m[id] = m
}

// Len is the number of module files remembered.
func (c *ModuleCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
