package cloudhypervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/crashpoint"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/template"
	"github.com/kuasar-go/kuasar/vm/internal/vmm"
)

// VM templates through Cloud Hypervisor's snapshot/restore API, verified
// against its OpenAPI description only (Cloud Hypervisor cannot run on
// the machine this was written on; the tests drive a fake VMM built from
// that description).
//
// A template is a guest booted once, paused (vm.pause) the moment its
// agent serves, and snapshotted (vm.snapshot) into a directory. A clone
// is a fresh VMM given that directory (vm.restore), then resumed
// (vm.resume). The snapshot holds the VM's config, and a restoring VMM
// recreates every device at the paths it names: the hybrid vsock socket
// it listens on, the virtio-fs socket it connects to, the serial console
// file. RestoreConfig has no field to change them (source_url, prefault,
// resume, memory_restore_mode, zone_updates: nothing about devices), so
// every clone would use the template's sockets. Instead, as a runtime
// that clones containers does with their paths, each template and clone
// VMM runs in a mount namespace of its own (vmm.StartInNamespace) in
// which the config's paths lead to its own files: the config names
// VMDir, bound there to that VM's state directory, and SnapshotDir,
// bound to the snapshot directory. The sandboxer reaches each clone's
// sockets at their host paths in its state directory.
//
// The template is kept in a template.Store like QEMU's (crash-safe
// build in the store's work directory, reaping, rebuild when found
// broken): the snapshot's memory-ranges file is the template's memory
// file, its other files (config.json, state.json) are packed into the
// template's state file (snapshot.go). A clone unpacks its own copy of
// those into its state directory (CloneSnapshotName), which its VMM's
// namespace binds read-only at SnapshotDir, with the template's memory
// file bound read-only over SnapshotDir/memory-ranges: a clone's VMM has
// no writable path to what later clones restore from. Cloud Hypervisor
// reads memory-ranges into guest memory of its own at vm.restore (never
// maps it; see docs/vm.md), so clones share no memory pages with the
// template or each other, and need no sealed copy.

// Canonical paths a template's config names (see above). They are empty
// directories on the host, created on first use; only inside a VMM's own
// mount namespace do they hold anything.
const (
	// VMDir stands for the VM's own state directory.
	VMDir = "/run/kuasar/ch-vm"
	// SnapshotDir stands for the template's snapshot directory.
	SnapshotDir = "/run/kuasar/ch-template"
)

// Files of a snapshot directory (Cloud Hypervisor writes config.json,
// state.json and memory-ranges).
const (
	// SnapshotConfigName holds the VM's config.
	SnapshotConfigName = "config.json"
	// MemoryName holds the guest memory (memory_manager.rs,
	// SNAPSHOT_FILENAME): the template's memory file in the store.
	MemoryName = "memory-ranges"
)

// AgentReadyLine is what the guest agent prints on the console once it
// serves (task/agent.Run): the template is taken then, before any
// traffic on the agent channel.
const AgentReadyLine = ": serving on "

// TemplateKey is everything a template for this VM must share with it:
// Cloud Hypervisor's binary and version, the guest's images, the kernel
// command line, the sizes, and the whole vm.create body as a template
// has it (canonical paths, so it does not depend on the VM's own
// directories). A clone restores from the snapshot of the VM with the
// same key.
func (v *VM) TemplateKey(ctx context.Context) (template.Key, error) {
	c := v.spec.Config
	var k template.Key
	var err error
	if k.Binary, err = template.Identify(c.Path); err != nil {
		return k, err
	}
	if k.Kernel, err = template.Identify(c.Kernel); err != nil {
		return k, err
	}
	if c.Initramfs != "" {
		if k.Initramfs, err = template.Identify(c.Initramfs); err != nil {
			return k, err
		}
	}
	if k.Version, err = chVersion(ctx, c.Path, k.Binary); err != nil {
		return k, err
	}
	canon := &VM{spec: v.spec, snap: &snapMode{}}
	cfg := canon.VMConfig()
	body, err := json.Marshal(cfg)
	if err != nil {
		return k, err
	}
	k.VMM = vm.CloudHypervisor
	k.Cmdline = v.Cmdline()
	k.VCPUs, k.MemoryMB = uint32(cfg.Cpus.BootVcpus), uint64(cfg.Memory.Size>>20)
	k.Devices = []string{string(body)}
	return k, nil
}

var versions sync.Map // template.FileID → string

// chVersion runs `cloud-hypervisor --version` once per binary identity.
func chVersion(ctx context.Context, path string, id template.FileID) (string, error) {
	if v, ok := versions.Load(id); ok {
		return v.(string), nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w (check \"path\" in [hypervisor.cloud-hypervisor])", path, err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	versions.Store(id, line)
	return line, nil
}

// snapMode marks a VM that builds a template or is restored from one.
type snapMode struct {
	dir     string // the snapshot directory on the host
	mem     string // a clone: the template's memory file, bound read-only over dir's MemoryName
	restore bool   // a clone: the snapshot is bound read-only
}

// startInNamespace starts the VMM of a template or clone in its own mount
// namespace, with VMDir and SnapshotDir bound to its own directories
// (and, for a clone, the template's memory file over SnapshotDir's
// MemoryName, read-only).
func (v *VM) startInNamespace() (*vmm.Process, error) {
	for _, d := range []string{VMDir, SnapshotDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("mount point for VM templates: %w", err)
		}
	}
	binds := []vmm.NSBind{
		{Source: v.spec.StateDir, Target: VMDir},
		{Source: v.snap.dir, Target: SnapshotDir, ReadOnly: v.snap.restore},
	}
	if v.snap.mem != "" {
		binds = append(binds, vmm.NSBind{Source: v.snap.mem, Target: filepath.Join(SnapshotDir, MemoryName), ReadOnly: true})
	}
	p, err := vmm.StartInNamespace(v.spec.Config.Path, v.Args(), v.path(VMMLogName), binds)
	if err != nil {
		return nil, fmt.Errorf("%w (check \"path\" in [hypervisor.cloud-hypervisor])", err)
	}
	return p, nil
}

// Templatable reports why the VM cannot come from a template ("" when it
// can): disks are attached per VM, and the per-VM mount namespaces
// templates need (see above) need root.
func (v *VM) Templatable() string {
	switch {
	case len(v.spec.Disks) > 0:
		return "the VM has disks attached (rootfs_mode \"block\")"
	case !vmm.CanJail():
		return "Cloud Hypervisor templates need root (each clone's VMM runs in a mount namespace of its own)"
	}
	return ""
}

// TemplateMemoryMapped reports that a clone does not map its template's
// memory: Cloud Hypervisor reads the snapshot's memory-ranges file into
// guest memory of its own at vm.restore (see docs/vm.md), so no sealed
// copy is needed (template.Store.GetCopied).
func (v *VM) TemplateMemoryMapped() bool { return false }

// TemplateSocketRoom is how long the paths of the unix sockets a
// template build's VMM makes below its work directory get: in vm/, the
// API, virtio-fs and hybrid vsock sockets, the longest being the one
// Cloud Hypervisor listens on for the agent's port (vsock.sock_1024).
func (v *VM) TemplateSocketRoom() int {
	return len(fmt.Sprintf("/vm/%s_%d", VsockSocketName, vm.AgentVsockPort))
}

// TemplateError is a restore that failed because of the template itself
// (Cloud Hypervisor refused its snapshot, or exited by itself while
// loading it): the caller removes the template and boots cold.
type TemplateError struct{ Err error }

// Error says the template is unusable and why.
func (e *TemplateError) Error() string { return "VM template unusable: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *TemplateError) Unwrap() error { return e.Err }

// TemplateUnusable marks the error as a template.Unusable.
func (e *TemplateError) TemplateUnusable() {}

// BuildTemplate boots a VM like v (same config and sizes) whose config
// names the canonical paths, waits for its agent's ready line on the
// console, pauses it and snapshots it (into workDir), then shuts it
// down and stores the snapshot as a template.Store keeps one: its
// memory-ranges file becomes mem (moved, or copied with its holes), its
// other files are packed into state (see packSnapshot). Its own files
// live in workDir, which it removes. It is a template.BuildFunc once
// bound to a VM; a failure leaves nothing running.
func (v *VM) BuildTemplate(ctx context.Context, workDir string, timeout time.Duration, mem, state string) (retErr error) {
	spec := v.spec
	spec.ID = "template-" + filepath.Base(workDir)
	spec.StateDir = filepath.Join(workDir, "vm")
	if v.spec.SharedDir != "" {
		spec.SharedDir = filepath.Join(workDir, "shared")
	}
	b, err := New(spec)
	if err != nil {
		return err
	}
	snap := filepath.Join(workDir, "snap")
	b.snap = &snapMode{dir: snap}
	defer os.RemoveAll(workDir)
	for _, d := range []string{spec.StateDir, spec.SharedDir, snap} {
		if d != "" {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return err
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		return err
	}
	defer b.Stop(context.WithoutCancel(ctx), 2*time.Second)
	if err := b.waitConsole(ctx, AgentReadyLine); err != nil {
		return err
	}
	crashpoint.Hit("template.build.agent-ready")
	if err := b.client.Pause(ctx); err != nil {
		return fmt.Errorf("pausing the template VM: %w", err)
	}
	if err := b.client.Snapshot(ctx, VmSnapshotConfig{DestinationURL: "file://" + SnapshotDir}); err != nil {
		return fmt.Errorf("snapshotting the template VM into %s: %w", snap, err)
	}
	for _, n := range []string{SnapshotConfigName, MemoryName} {
		if _, err := os.Lstat(filepath.Join(snap, n)); err != nil {
			return fmt.Errorf("the template's snapshot in %s has no %s: %w: %w", snap, n, err, errdefs.ErrDataLoss)
		}
	}
	if err := moveSparse(filepath.Join(snap, MemoryName), mem); err != nil {
		return fmt.Errorf("storing the template's memory: %w", err)
	}
	if err := packSnapshot(snap, state); err != nil {
		return fmt.Errorf("storing the template's snapshot: %w", err)
	}
	return nil
}

// CloneSnapshotName is the directory, in a clone's state directory,
// holding its own copy of the template's snapshot files other than the
// memory (unpacked from the template's state file), bound read-only at
// SnapshotDir in its VMM's namespace with the template's memory file
// bound read-only over its MemoryName.
const CloneSnapshotName = "template"

// StartFromTemplate is Start for a VM restored from t (built by
// BuildTemplate of a VM with the same key): the snapshot's files are
// unpacked into this VM's state directory, then virtiofsd and a fresh
// VMM in its own mount namespace (its devices land in this VM's state
// directory; the snapshot and the template's memory are bound
// read-only), vm.restore from the snapshot, then vm.resume. A failure
// stops the VMM and virtiofsd and removes the sockets and the unpacked
// files; when the template itself is at fault (its files do not unpack,
// the VMM refuses them with HTTP 400 or exits by itself while loading
// them) the error is a *TemplateError.
func (v *VM) StartFromTemplate(ctx context.Context, t *template.Template) (retErr error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := vmm.Prepare(v.proc.Load(), v.spec.ID, v.spec.StateDir); err != nil {
		return err
	}
	if _, err := os.Stat(t.MemPath); err != nil {
		return fmt.Errorf("VM template %s: memory file: %w: %w", t.Dir, err, errdefs.ErrNotFound)
	}
	dir := v.path(CloneSnapshotName)
	_ = os.RemoveAll(dir)
	defer func() {
		if retErr != nil {
			v.cleanupLocked()
			_ = os.RemoveAll(dir)
		}
	}()
	if err := unpackSnapshot(t.StatePath, dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("VM template %s: %w: %w", t.Dir, err, errdefs.ErrNotFound)
		}
		return &TemplateError{Err: err}
	}
	v.snap = &snapMode{dir: dir, mem: t.MemPath, restore: true}
	if err := v.launchLocked(ctx); err != nil {
		return err
	}
	p := v.proc.Load()
	if err := v.client.Restore(ctx, RestoreConfig{SourceURL: "file://" + SnapshotDir}); err != nil {
		return v.restoreFailed(p, fmt.Errorf("restoring VM %s from the template %s: %w", v.spec.ID, t.Dir, err))
	}
	if err := v.client.Resume(ctx); err != nil {
		return v.restoreFailed(p, fmt.Errorf("resuming VM %s restored from the template %s: %w", v.spec.ID, t.Dir, err))
	}
	return nil
}

// restoreFailed words a failed vm.restore or vm.resume: refused (HTTP
// 400) or a VMM that exited by itself is the template's fault; a VMM
// killed by a signal, or any other answer, is a plain failure.
func (v *VM) restoreFailed(p *vmm.Process, err error) error {
	if errdefs.IsInvalidArgument(err) {
		return &TemplateError{Err: err}
	}
	select {
	case <-p.Done():
	case <-time.After(100 * time.Millisecond):
		// Still running (a VMM that dies closes its API socket just
		// before it is reaped): not the VMM's verdict.
		return err
	}
	var ee *exec.ExitError
	if errors.As(p.ExitError(), &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Errorf("cloud-hypervisor of VM %s was killed by signal %d (%v) while restoring from a template: %w: %w", v.spec.ID, int(ws.Signal()), ws.Signal(), err, errdefs.ErrUnavailable)
		}
	}
	return &TemplateError{Err: fmt.Errorf("cloud-hypervisor exited while loading the snapshot (%w): %s", err, p.Tail(2000))}
}

// waitConsole polls the console log until it holds line, the VMM exits
// or ctx ends.
func (v *VM) waitConsole(ctx context.Context, line string) error {
	p := v.proc.Load()
	return vmm.Poll(ctx, p, 10*time.Millisecond, func() error {
		b, err := os.ReadFile(v.ConsoleLog())
		if err == nil && bytes.Contains(b, []byte(line)) {
			return nil
		}
		return errdefs.ErrNotFound
	}, func(exited bool, _ error) error {
		if exited {
			return fmt.Errorf("cloud-hypervisor exited while booting the template: %s; see %s: %w", p.Tail(2000), v.ConsoleLog(), errdefs.ErrUnavailable)
		}
		return fmt.Errorf("the template's guest agent did not report ready on the console (%q) in time: %w; see %s", line, ctx.Err(), v.ConsoleLog())
	})
}
