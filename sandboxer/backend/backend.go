// Package backend is the contract between the sandboxer and the sandbox kinds
// it can run (in-process Wasm, micro-VMs, Quark).
//
// The sandboxer owns the Sandbox API, the persisted records and the one Task
// API socket per sandbox that containerd talks to; a Backend owns what runs
// the containers. The sandboxer forwards every Task API call for a sandbox to
// the TaskService of its Instance. Backends never import each other: anything
// two of them share lives in a small package like this one.
package backend

import (
	"context"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"

	"github.com/kuasar-go/kuasar/internal/procfs"
)

// Sandbox is what a backend is told about a pod sandbox.
type Sandbox struct {
	// ID is the sandbox ID containerd chose.
	ID string
	// Namespace is the containerd namespace the sandbox lives in.
	Namespace string
	// StateDir is a directory that belongs to this sandbox alone; it is
	// created before Start and removed after Shutdown.
	StateDir string
	// NetnsPath is the pod's network namespace, if any.
	NetnsPath string
	// Hostname is the pod's hostname from its PodSandboxConfig.
	Hostname string
	// Annotations and Labels come from the PodSandboxConfig (and the
	// sandbox record) unchanged.
	Annotations map[string]string
	Labels      map[string]string
	// Resources are the pod's sizes, zero when the pod sets none.
	Resources Resources
	// Hypervisor is the hypervisor asked for (pod annotation
	// kuasar.io/hypervisor, image metadata or the config's default); only VM
	// backends read it.
	Hypervisor string
	// WasmEngine is the Wasm engine asked for (pod annotation
	// kuasar.io/wasm-engine, else the runtime handler's wasm_engine); ""
	// leaves it to the backend's default. Only the wasm backend reads it.
	WasmEngine string
}

// Resources are the sizes a pod asks for.
type Resources struct {
	// MemoryLimitBytes caps the sandbox's memory; 0 means the backend's default.
	MemoryLimitBytes uint64
	// CPUQuota and CPUPeriod (microseconds) express a CPU limit; both 0
	// means none. VM backends turn them into a vCPU count.
	CPUQuota  int64
	CPUPeriod uint64
}

// Backend starts sandboxes of one kind.
type Backend interface {
	// Name is the kind this backend runs: "wasm", "vm" or "quark".
	Name() string
	// Start brings a sandbox up and returns the Instance that runs its
	// containers. A failed Start leaves nothing behind (processes, sockets,
	// mounts, files outside sb.StateDir).
	Start(ctx context.Context, sb Sandbox) (Instance, error)
	// Recover re-attaches to a sandbox after the sandboxer restarted, from
	// the bytes its Instance's Checkpoint returned. When what ran the sandbox
	// is gone (an in-process Wasm sandbox always is), Recover returns an
	// Instance that reports the sandbox exited with code 137 and can still be
	// shut down.
	Recover(ctx context.Context, sb Sandbox, checkpoint []byte) (Instance, error)
}

// Instance is one running (or exited) sandbox.
type Instance interface {
	// Tasks is the Task API service for the sandbox's containers.
	Tasks() taskAPI.TTRPCTaskService
	// Pid is the pid of the process that hosts the sandbox (the sandboxer
	// itself for in-process Wasm, the VMM for a VM).
	Pid() uint32
	// Checkpoint returns what Recover needs to re-attach, for the
	// sandboxer's persisted record. It must be cheap and may be called often.
	Checkpoint() []byte
	// Stop stops every container, then the sandbox. timeout bounds the
	// graceful part; after it everything is killed.
	Stop(ctx context.Context, timeout time.Duration) error
	// Wait blocks until the sandbox has exited or ctx is done. A sandbox
	// that has already exited reports its exit even when ctx is done
	// already: the sandboxer asks so, with a done ctx, right after
	// Recover, to learn at once whether the sandbox still runs.
	Wait(ctx context.Context) (Exit, error)
	// Metrics reports the sandbox's resource use.
	Metrics(ctx context.Context) (Metrics, error)
	// Update applies new resources, where the backend can.
	Update(ctx context.Context, r Resources) error
	// Shutdown stops the sandbox if needed and removes everything it owned.
	// It is idempotent.
	Shutdown(ctx context.Context) error
}

// ExitNotifier is an optional interface of an Instance whose exit can be
// awaited without a blocked goroutine: the sandboxer then reacts to the exit
// with context.AfterFunc instead of parking a goroutine in Wait for each
// live sandbox (at least 8 KiB of stack apiece, which counts at thousands of
// idle Wasm sandboxes).
type ExitNotifier interface {
	// ExitContext returns a context that is done once the sandbox has
	// exited; Wait then returns at once.
	ExitContext() context.Context
}

// Exit is how a sandbox ended.
type Exit struct {
	Status   uint32
	ExitedAt time.Time
}

// Metrics are a sandbox's figures.
type Metrics struct {
	// MemoryBytes is the memory in use by the sandbox (Wasm: linear memory
	// of its live instances; VM: the VMM's resident set).
	MemoryBytes uint64
	// AnonBytes, FileBytes and ShmemBytes split MemoryBytes by kind of
	// page where the backend knows it (VM: the VMM's RssAnon, RssFile and
	// RssShmem; Wasm: linear memory is all anonymous); all zero when it
	// does not. Consumers read them as cgroup v2's anon, file and shmem.
	AnonBytes, FileBytes, ShmemBytes uint64
	// CPUNanos is the CPU time the sandbox has used.
	CPUNanos uint64
	// UserNanos and SystemNanos split CPUNanos into user-mode and kernel
	// time where the backend measures them (VM: the VMM's utime and stime);
	// both zero when it cannot (Wasm: a thread's CPU clock has no split).
	UserNanos, SystemNanos uint64
	// Tasks is the number of live tasks (containers and execs).
	Tasks uint32
}

// AddProcess fills m's memory and CPU figures from the host process pid that
// holds the whole sandbox (a VMM, a Quark sandbox process): its resident set
// split by page kind, and its user and system CPU time. Backends whose
// sandbox is one process share this one reading of /proc.
func (m *Metrics) AddProcess(pid int) error {
	mem, err := procfs.Memory(pid)
	if err != nil {
		return err
	}
	m.MemoryBytes, m.AnonBytes, m.FileBytes, m.ShmemBytes = mem.RSS, mem.Anon, mem.File, mem.Shmem
	user, sys, err := procfs.CPUTimes(pid)
	if err != nil {
		return err
	}
	m.UserNanos, m.SystemNanos = uint64(user), uint64(sys)
	m.CPUNanos = m.UserNanos + m.SystemNanos
	return nil
}
