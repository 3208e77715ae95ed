// Package exithook holds the functions to run once a process has exited,
// before its exit is published: the sandboxer writes a task's exit record
// in one, so the record is on disk before containerd hears of the exit
// (task/wasmtask and task/forward run them, each for its own processes).
package exithook

import "sync"

// Hooks is a list of functions run once, by Run. A function added after
// Run runs at once, on the caller's goroutine. The zero value is ready.
type Hooks struct {
	mu  sync.Mutex
	fns []func()
	ran bool
}

// Add runs f when Run is called, or at once if it already was.
func (h *Hooks) Add(f func()) {
	h.mu.Lock()
	if h.ran {
		h.mu.Unlock()
		f()
		return
	}
	h.fns = append(h.fns, f)
	h.mu.Unlock()
}

// Run runs the functions added so far, in order, on the caller's
// goroutine, and marks the list run (later calls run nothing).
func (h *Hooks) Run() {
	h.mu.Lock()
	fns := h.fns
	h.fns, h.ran = nil, true
	h.mu.Unlock()
	for _, f := range fns {
		f()
	}
}
