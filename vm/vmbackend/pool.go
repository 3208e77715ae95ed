package vmbackend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/procmark"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/qemu"
	"github.com/kuasar-go/kuasar/vm/internal/vmm"
)

// The warm pool ([hypervisor.qemu] template_pool = N): for each VM
// template in use the backend keeps up to N clones restored, resumed and
// warmed ahead of need, as Kata's VM cache does, so that a sandbox start
// adopts a running guest instead of paying a restore (QEMU start, state
// load, and TCG translating the guest's code afresh).
//
// A clone is warmed with what is the same for every tenant: the agent's
// first Ping, and a SetupSandbox that only mounts the clone's own (empty)
// shared directory. What belongs to a sandbox (its hostname, the host's
// clock and fresh entropy) is still set by the adopting sandbox's
// SetupSandbox, before any of its containers is created.
//
// A clone lives in a directory beside the sandboxes' own (the parent of
// the first sandbox state directory it is made for; for the sandboxer,
// <base>/b, as p-<14 hex>: no sandbox directory has that name), so:
//
//   - adopting it is one rename(2) of that directory onto the sandbox's
//     empty state directory: its vm/ and shared/ (a mount point, moved
//     with its parent) become the sandbox's, and a crash either side of
//     the rename leaves it owned by the pool or by the sandbox;
//   - its QEMU is recorded (vm/vmm.proc) and marked with its pool path
//     before it starts (vm/internal/vmm), like every VMM, and the record
//     is copied into pool/ (cloneRecordDir), which only root can write.
//     The records move with the directory; the mark cannot change, which
//     is why the sandboxer kills the processes recorded (in a directory
//     only it can write) in a backend directory as well as those marked
//     with it (sandboxer/reconcile.go);
//   - after a crash, the sandboxer's restart reaps every p-* directory as
//     a backend directory no record names, and the backend reaps those it
//     finds when it first uses a parent directory (reapStaleClones).

// DefaultTemplatePool is the template_pool configs/config.toml ships:
// one idle clone (about 58 MiB PSS) per template in use.
const DefaultTemplatePool = 1

// MaxTemplatePool bounds template_pool: each idle clone holds memory.
const MaxTemplatePool = 64

// clonePrefix begins the name of a pool clone's directory.
const clonePrefix = "p-"

// poolFailureLimit is how many clones in a row may fail before the pool
// of a template stops refilling (until a sandbox start asks again).
const poolFailureLimit = 3

// pool is the backend's warm pool of clones, by template and parent
// directory.
type pool struct {
	b      *Backend
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu      sync.Mutex
	sets    map[poolKey]*poolSet
	parents map[string]bool // parent directories swept of stale clones
	parent  string          // the one whose sandboxes it serves (serves)
	closed  bool
	wg      sync.WaitGroup
}

// poolRefillDelay is how long after a clone is taken its replacement
// begins (a restore is about 0.4-2 s of CPU under TCG).
const poolRefillDelay = time.Second

// poolKey names one set of interchangeable clones.
type poolKey struct {
	digest string // the template's
	parent string // where their directories are
}

// poolSet is the clones of one key.
type poolSet struct {
	idle     []*Instance
	filling  int
	failures int
	name     string  // hypervisor
	spec     vm.Spec // sizes and config (no ID or directories)
	adopted  int     // clones taken, for tests and diagnostics
}

func newPool(b *Backend) *pool {
	ctx, cancel := context.WithCancel(context.Background())
	return &pool{b: b, ctx: ctx, cancel: cancel, sets: map[poolKey]*poolSet{}, parents: map[string]bool{}}
}

// size is the configured pool size for hypervisor name (0: no pool).
// Without root there is none: an unconfined QEMU resolves its agent
// socket's path in the host's mount namespace, so an adopted clone, whose
// directory was renamed, could not reconnect after a sandboxer restart
// (a confined one sees its directory through a bind made at its start).
func (p *pool) size(name string) int {
	if p == nil || os.Geteuid() != 0 {
		return 0
	}
	return p.b.configs[name].TemplatePool
}

// serves reports whether the pool serves sandboxes whose directories are
// in parent: the parent of the first sandbox it saw (for the sandboxer,
// <base>/b, where every sandbox's is), so that the clones it holds stay
// bounded by template_pool per template.
func (p *pool) serves(parent string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.parent == "" {
		p.parent = parent
	}
	return p.parent == parent
}

// take hands out an idle clone of key, nil when there is none; either way
// it has the set refilled.
func (p *pool) take(ctx context.Context, key poolKey, name string, spec vm.Spec) *Instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	s := p.setLocked(key, name, spec)
	var got *Instance
	for len(s.idle) > 0 && got == nil {
		c := s.idle[0]
		s.idle = s.idle[1:]
		if c.hasExited() || c.hv.Pid() == 0 {
			log.G(ctx).WithField("clone", c.sb.ID).Warn("vm: a pool clone had exited; discarding it")
			p.discard(c)
			continue
		}
		got = c
		s.adopted++
	}
	s.failures = 0
	if got == nil {
		p.fillLocked(key, s)
		return nil
	}
	// Refill once the adopting sandbox has had the CPU for its own
	// set-up and first container: a restore started now would compete
	// with exactly the start the clone was kept for.
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		select {
		case <-time.After(poolRefillDelay):
		case <-p.ctx.Done():
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.fillLocked(key, s)
	}()
	return got
}

// setLocked returns key's set, made on first use.
func (p *pool) setLocked(key poolKey, name string, spec vm.Spec) *poolSet {
	s := p.sets[key]
	if s == nil {
		spec.ID, spec.StateDir, spec.SharedDir = "", "", ""
		s = &poolSet{name: name, spec: spec}
		p.sets[key] = s
	}
	p.sweepLocked(key.parent)
	return s
}

// sweep reaps the clones a previous run left in parent, once per parent
// (before this pool makes any there).
func (p *pool) sweep(parent string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sweepLocked(parent)
}

func (p *pool) sweepLocked(parent string) {
	if !p.parents[parent] {
		p.parents[parent] = true
		reapStaleClones(p.ctx, parent)
	}
}

// fillLocked starts making clones until the set will hold its size.
func (p *pool) fillLocked(key poolKey, s *poolSet) {
	n := p.size(s.name)
	for len(s.idle)+s.filling < n && s.failures < poolFailureLimit && !p.closed {
		s.filling++
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			c, err := p.b.makeClone(p.ctx, key, s.name, s.spec)
			p.mu.Lock()
			defer p.mu.Unlock()
			s.filling--
			if err != nil {
				if p.ctx.Err() == nil {
					s.failures++
					log.G(p.ctx).WithError(err).WithField("failures", s.failures).Warn("vm: making a pool clone failed")
				}
				return
			}
			if p.closed {
				p.discard(c)
				return
			}
			s.failures = 0
			s.idle = append(s.idle, c)
			log.G(p.ctx).WithField("clone", c.sb.ID).WithField("template", key.digest).Debug("vm: pool clone ready")
		}()
	}
}

// discard shuts clone c down and removes its directory, in the background.
func (p *pool) discard(c *Instance) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		removeClone(context.WithoutCancel(p.ctx), c)
	}()
}

// removeClone shuts c down and removes its directory; nothing is left.
func removeClone(ctx context.Context, c *Instance) {
	if err := c.Shutdown(ctx); err != nil {
		log.G(ctx).WithField("clone", c.sb.ID).WithError(err).Warn("vm: shutting down a pool clone")
	}
	if err := cleanupDir(c.sb.StateDir); err != nil {
		log.G(ctx).WithField("clone", c.sb.ID).WithError(err).Warn("vm: removing a pool clone's directory")
	}
}

// close stops refilling, waits for clones being made and removes every
// idle one.
func (p *pool) close(ctx context.Context) {
	p.mu.Lock()
	p.closed = true
	var idle []*Instance
	for _, s := range p.sets {
		idle = append(idle, s.idle...)
		s.idle = nil
	}
	p.mu.Unlock()
	p.cancel()
	for _, c := range idle {
		removeClone(ctx, c)
	}
	p.wg.Wait()
}

// WithoutPool turns the warm pool off whatever template_pool says, for a
// backend that serves one sandbox and exits (`kuasar run`): its clones
// would be made for nothing.
func WithoutPool() Option { return func(b *Backend) { b.noPool = true } }

// PoolIdle reports how many idle clones the warm pool holds, and how many
// clones sandboxes have adopted from it since the backend was made.
func (b *Backend) PoolIdle() (idle, adopted int) {
	if b.pool == nil {
		return 0, 0
	}
	b.pool.mu.Lock()
	defer b.pool.mu.Unlock()
	for _, s := range b.pool.sets {
		idle += len(s.idle)
		adopted += s.adopted
	}
	return idle, adopted
}

// FromPool reports whether the sandbox adopted a clone from the warm pool
// (it then also came FromTemplate).
func (i *Instance) FromPool() bool { return i.vmID != "" }

// Close stops the warm pool: no clone is made any more and every idle one
// is shut down and removed. Running sandboxes are not affected. Call it
// when the backend is no longer used.
func (b *Backend) Close(ctx context.Context) error {
	if b.pool != nil {
		b.pool.close(ctx)
	}
	return nil
}

// cloneID is a fresh name for a pool clone: p- and 14 hex digits, as long
// as a sandboxer's backend directory name (socket paths stay within
// bounds) and never one of them (those are 16 hex digits).
func cloneID() (string, error) {
	var r [7]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	return clonePrefix + hex.EncodeToString(r[:]), nil
}

// makeClone restores a clone of key's template in a new directory under
// key.parent, waits for its agent and warms it. A failure leaves nothing.
func (b *Backend) makeClone(ctx context.Context, key poolKey, name string, spec vm.Spec) (_ *Instance, retErr error) {
	id, err := cloneID()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(key.parent, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pool clone directory: %w", err)
	}
	spec.ID, spec.StateDir, spec.SharedDir = id, filepath.Join(dir, "vm"), filepath.Join(dir, "shared")
	sb := backend.Sandbox{ID: id, StateDir: dir}
	inst := newInstance(sb, name, spec, nil, b.publisher)
	defer func() {
		if retErr != nil {
			removeClone(context.WithoutCancel(ctx), inst)
			_ = os.RemoveAll(dir)
		}
	}()
	for _, d := range []string{spec.StateDir, spec.SharedDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, err
		}
	}
	if os.Geteuid() == 0 {
		if err := makeSharedMount(spec.SharedDir); err != nil {
			return nil, err
		}
	}
	d, err := b.newDriver(name, spec)
	if err != nil {
		return nil, err
	}
	inst.hv = d
	q, ok := d.(*qemu.VM) // adopt relocates a clone's QEMU (qemu.VM.Relocate)
	if !ok {
		return nil, fmt.Errorf("pool clones are implemented for qemu only: %w", errdefs.ErrNotImplemented)
	}
	t0 := time.Now()
	digest, err := b.restore(ctx, q)
	if err != nil {
		return nil, err
	}
	if digest != key.digest {
		return nil, fmt.Errorf("the template changed while a pool clone was made (%s, want %s): %w", digest, key.digest, errdefs.ErrAborted)
	}
	inst.template = digest
	inst.started = t0
	if err := keepRecord(dir, spec.StateDir); err != nil {
		return nil, err
	}
	if err := inst.connect(ctx, b.agentTimeout); err != nil {
		return nil, err
	}
	// Warm the guest with what every tenant does alike: mount the
	// shared directory (its own, still empty). The agent also pre-forks
	// its container helper then. No hostname, clock or entropy: those
	// are the adopting sandbox's.
	req := &agentapi.SetupSandboxRequest{Mounts: []*agentapi.Mount{shareMount(inst)}}
	if _, err := inst.agent.SetupSandbox(ctx, req); err != nil {
		return nil, fmt.Errorf("warming pool clone %s: %w", id, err)
	}
	inst.vmID = id
	inst.watch()
	log.G(ctx).WithField("clone", id).WithField("took", time.Since(t0)).Debug("vm: pool clone made")
	return inst, nil
}

// cloneRecordDir holds, in a clone's directory, the copy of its QEMU's
// record the sandboxer trusts once a sandbox adopted it: the QEMU's own
// state directory (vm/) is writable by the confined QEMU's group, so a
// record there naming a process marked elsewhere is not honoured
// (sandboxer/reconcile.go, recordedProcs). Root-only, mode 0700.
const cloneRecordDir = "pool"

// keepRecord copies the record of the QEMU in stateDir into dir's
// cloneRecordDir.
func keepRecord(dir, stateDir string) error {
	r, err := procmark.Read(vmm.RecordPath(filepath.Join(stateDir, qemu.VMMLogName)))
	if err != nil {
		return fmt.Errorf("reading the pool clone's process record: %w", err)
	}
	rd := filepath.Join(dir, cloneRecordDir)
	if err := os.Mkdir(rd, 0o700); err != nil {
		return err
	}
	return procmark.Write(filepath.Join(rd, "vmm"+procmark.RecordExt), r)
}

// adopt makes clone c sandbox sb's, whose spec is spec: c's directory is
// renamed onto sb.StateDir (which must be empty), and the instance and
// its driver take the sandbox's paths and identity. On failure c is
// removed and the caller starts the sandbox otherwise.
func (b *Backend) adopt(ctx context.Context, c *Instance, sb backend.Sandbox, spec vm.Spec) error {
	cloneDir := c.sb.StateDir
	// rename(2) itself: os.Rename refuses an existing directory as the
	// target, and the sandbox's (empty) state directory exists.
	if err := unix.Rename(cloneDir, sb.StateDir); err != nil {
		removeClone(ctx, c)
		return fmt.Errorf("adopting pool clone %s into %s: %w", c.sb.ID, sb.StateDir, err)
	}
	c.hv.(*qemu.VM).Relocate(spec.StateDir, spec.SharedDir)
	c.mu.Lock()
	c.sb = sb
	c.spec.ID, c.spec.StateDir, c.spec.SharedDir = spec.ID, spec.StateDir, spec.SharedDir
	c.started = time.Now()
	c.mu.Unlock()
	return nil
}

// shareMount is the guest mount of the sandbox's shared directory.
func shareMount(i *Instance) *agentapi.Mount {
	if shareMode(i.spec.Config, i.hv.Capabilities()) == vm.ShareVirtioFS {
		return &agentapi.Mount{Source: vm.ShareTag, Fstype: "virtiofs", Target: vm.GuestSharedDir}
	}
	return &agentapi.Mount{
		Source: vm.ShareTag, Fstype: "9p", Target: vm.GuestSharedDir,
		Options: []string{"trans=virtio", "version=9p2000.L", "msize=262144", "cache=none"},
	}
}

// fromPool starts sandbox sb from a pool clone when the pool has one for
// its template; nil, nil when the sandbox must start otherwise (no pool,
// no template fits, no idle clone, or adopting failed).
func (b *Backend) fromPool(ctx context.Context, sb backend.Sandbox, name string, spec vm.Spec) (*Instance, error) {
	if b.pool.size(name) == 0 || b.templates == nil {
		return nil, nil
	}
	d, err := b.newDriver(name, spec)
	if err != nil {
		return nil, nil
	}
	if why := b.noTemplate(sb, name, spec, d); why != "" {
		return nil, nil
	}
	tkey, err := d.(templater).TemplateKey(ctx)
	if err != nil {
		return nil, nil
	}
	key := poolKey{digest: tkey.Digest(), parent: filepath.Dir(sb.StateDir)}
	if !b.pool.serves(key.parent) {
		return nil, nil
	}
	c := b.pool.take(ctx, key, name, spec)
	if c == nil {
		return nil, nil
	}
	if err := b.adopt(ctx, c, sb, spec); err != nil {
		log.G(ctx).WithField("sandbox", sb.ID).WithError(err).Warn("vm: not starting from the pool")
		return nil, nil
	}
	return c, nil
}

// wantPool has the pool of the template a sandbox just started from
// filled, so that the next start of that key finds a clone.
func (b *Backend) wantPool(ctx context.Context, inst *Instance) {
	if b.pool.size(inst.hvName) == 0 || inst.template == "" {
		return
	}
	key := poolKey{digest: inst.template, parent: filepath.Dir(inst.sb.StateDir)}
	if !b.pool.serves(key.parent) {
		return
	}
	b.pool.mu.Lock()
	defer b.pool.mu.Unlock()
	if b.pool.closed {
		return
	}
	s := b.pool.setLocked(key, inst.hvName, inst.spec)
	b.pool.fillLocked(key, s)
}

// reapStaleClones kills and removes the pool clones a previous run of the
// backend left in parent (it was killed): a clone still in a p-*
// directory was never adopted. An adopted clone's QEMU is marked with its
// old pool path, which no longer exists, and belongs to its sandbox; it
// is left alone.
func reapStaleClones(ctx context.Context, parent string) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), clonePrefix) {
			continue
		}
		dir := filepath.Join(parent, e.Name())
		killed, err := procmark.Reap(dir)
		for _, p := range killed {
			log.G(ctx).WithField("pid", p.Pid).WithField("clone", e.Name()).Warn("vm: killed a pool clone left by a previous run")
		}
		if err := errors.Join(err, cleanupDir(dir)); err != nil {
			log.G(ctx).WithField("clone", e.Name()).WithError(err).Warn("vm: removing a pool clone left by a previous run")
		}
	}
}

// checkPoolSetting validates [hypervisor.NAME] template_pool.
func checkPoolSetting(name string, c vm.Config) error {
	switch {
	case c.TemplatePool < 0 || c.TemplatePool > MaxTemplatePool:
		return fmt.Errorf("template_pool %d in [hypervisor.%s]: use 0 (no pool) to %d: %w", c.TemplatePool, name, MaxTemplatePool, errdefs.ErrInvalidArgument)
	case c.TemplatePool > 0 && name != vm.QEMU:
		return fmt.Errorf("template_pool in [hypervisor.%s]: the warm pool is implemented for qemu only: remove it or set it to 0: %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}
