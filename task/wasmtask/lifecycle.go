package wasmtask

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"syscall"
	"time"

	"github.com/containerd/log"
)

// Usage are the figures of a Service's live instances.
type Usage struct {
	// MemoryBytes is the sum of the live instances' linear memory.
	MemoryBytes uint64
	// CPUNanos is the CPU time every instance (live or ended, not yet
	// deleted) spent running guest code and host calls on its thread.
	CPUNanos uint64
	// Tasks counts live processes (containers and execs).
	Tasks uint32
}

// Usage sums the figures of every task of the service.
func (s *Service) Usage() Usage {
	var u Usage
	for _, c := range s.containers() {
		for _, p := range s.processes(c) {
			u.MemoryBytes += p.memoryBytes()
			u.CPUNanos += p.cpuNanos()
			if !p.exited() {
				u.Tasks++
			}
		}
	}
	return u
}

func (s *Service) containers() []*container {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := make([]*container, 0, len(s.tasks))
	for _, c := range s.tasks {
		if c != nil {
			cs = append(cs, c)
		}
	}
	return cs
}

// KillAll sends sig to every live process of every task.
func (s *Service) KillAll(ctx context.Context, sig syscall.Signal) {
	for _, c := range s.containers() {
		for _, p := range s.processes(c) {
			if !p.exited() {
				p.kill(sig, func(ep *process) { s.exited(c, ep) })
			}
		}
	}
}

// waitIdle blocks until no process of any task runs, or ctx is done.
func (s *Service) waitIdle(ctx context.Context) error {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if s.Usage().Tasks == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stop stops every process: sig first (SIGTERM), then SIGKILL once timeout
// passed, and waits for them all to end.
func (s *Service) Stop(ctx context.Context, sig syscall.Signal, timeout time.Duration) error {
	s.KillAll(ctx, sig)
	gctx, cancel := context.WithTimeout(ctx, timeout)
	err := s.waitIdle(gctx)
	cancel()
	if err == nil {
		return nil
	}
	s.KillAll(ctx, syscall.SIGKILL)
	if err := s.waitIdle(ctx); err != nil {
		return fmt.Errorf("wasm tasks did not stop after SIGKILL: %w", err)
	}
	return nil
}

// TaskRecord is what a Service persists about a task so that, after the
// hosting process restarted, its leftovers can be reported and cleaned up.
type TaskRecord struct {
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	Bundle    string `json:"bundle"`
	// Rootfs is the directory the task's rootfs is mounted on, when Create
	// mounted it.
	Rootfs string `json:"rootfs,omitempty"`
}

// records lists the service's tasks for a checkpoint.
func (s *Service) records() []TaskRecord {
	s.mu.Lock()
	out := make([]TaskRecord, 0, len(s.mounting))
	for _, r := range s.mounting {
		out = append(out, r)
	}
	s.mu.Unlock()
	for _, c := range s.containers() {
		r := TaskRecord{ID: c.id, Namespace: c.ns, Bundle: c.bundle}
		if len(c.mounts) > 0 || (c.recovered && c.rootfs != "") {
			r.Rootfs = c.rootfs
		}
		out = append(out, r)
	}
	return out
}

// Restore registers tasks that ran before the hosting process restarted.
// Their instances died with it: each reports exited with status, can be
// waited on and deleted (which unmounts its rootfs), and nothing else.
func (s *Service) Restore(records []TaskRecord, status uint32, at time.Time) {
	// The state file holds what an earlier process wrote, not what this
	// service last saved: the next save must write.
	s.stateMu.Lock()
	s.stateSaved = false
	s.stateRec = recordFile{}
	s.stateMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range records {
		if _, ok := s.tasks[r.ID]; ok {
			continue
		}
		c := &container{id: r.ID, ns: r.Namespace, bundle: r.Bundle, rootfs: r.Rootfs, mounted: r.Rootfs != "", execs: map[string]*process{}, recovered: true}
		c.init = exitedProcess("", status, at)
		s.tasks[r.ID] = c
	}
	s.notifyLocked()
}

// Close kills whatever still runs, unmounts every rootfs the service
// mounted, forgets every task and flushes pending events. The service
// refuses new tasks afterwards. It is idempotent.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.KillAll(ctx, syscall.SIGKILL)
	if err := s.waitIdle(ctx); err != nil {
		return err
	}
	var firstErr error
	for _, c := range s.containers() {
		if err := c.unmount(); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		s.mu.Lock()
		delete(s.tasks, c.id)
		s.mu.Unlock()
	}
	s.saveState(ctx)
	if err := s.events.Close(ctx); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}

// saveState writes the task records to the state file, if one is set. The
// writes are serialised, so the file always ends with the records of the
// last call, and a write whose content equals what the file holds is
// skipped (Close after the last Delete, say).
func (s *Service) saveState(ctx context.Context) {
	if s.cfg.stateFile == "" {
		return
	}
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	b, err := json.Marshal(s.records())
	if err == nil {
		h := recordsSum(b)
		if s.stateSaved && h == s.stateSum {
			return
		}
		if err = s.stateRec.write(s.cfg.stateFile, b); err == nil {
			s.stateSum, s.stateSaved = h, true
			return
		}
		s.stateSaved = false
	}
	log.G(ctx).WithField("sandbox", s.cfg.sandboxID).WithError(err).Warn("save wasm task records")
}

// recordsSum is the hash saveState compares records by.
func recordsSum(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

// LoadRecords reads the task records a service kept with WithStateFile:
// those of the file's newest intact slot (see recordFile), or the plain
// JSON list earlier versions wrote. A missing file means no tasks.
func LoadRecords(path string) ([]TaskRecord, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if b, err = decodeRecordFile(b); err != nil {
		return nil, fmt.Errorf("read wasm task records %s: %w (removing the file forgets the sandbox's tasks: unmount their rootfs by hand)", path, err)
	}
	var recs []TaskRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("parse wasm task records %s: %w", path, err)
	}
	return recs, nil
}

// SetMemoryLimit changes the sandbox-wide memory cap for instances started
// from now on (creates and execs) and the bound on the sum of every
// instance's memory, for grows from now on; 0 removes both.
func (s *Service) SetMemoryLimit(bytes uint64) {
	s.memLimit.Store(bytes)
	s.budget.SetLimit(bytes)
}
