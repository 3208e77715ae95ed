package cloudhypervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"

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
// bound to the template's snapshot directory (read-only for clones, so
// a clone's VMM cannot change what later clones restore from). The
// sandboxer reaches each clone's sockets at their host paths in its
// state directory.

// Canonical paths a template's config names (see above). They are empty
// directories on the host, created on first use; only inside a VMM's own
// mount namespace do they hold anything.
const (
	// VMDir stands for the VM's own state directory.
	VMDir = "/run/kuasar/ch-vm"
	// SnapshotDir stands for the template's snapshot directory.
	SnapshotDir = "/run/kuasar/ch-template"
)

// SnapshotConfigName is the file of a snapshot directory that holds the
// VM's config (Cloud Hypervisor writes config.json, state.json and
// memory-ranges).
const SnapshotConfigName = "config.json"

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
	restore bool   // a clone: the snapshot is bound read-only
}

// startInNamespace starts the VMM of a template or clone in its own mount
// namespace, with VMDir and SnapshotDir bound to its own directories.
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
	p, err := vmm.StartInNamespace(v.spec.Config.Path, v.Args(), v.path(VMMLogName), binds)
	if err != nil {
		return nil, fmt.Errorf("%w (check \"path\" in [hypervisor.cloud-hypervisor])", err)
	}
	return p, nil
}

// BuildTemplate boots a VM like v (same config and sizes) whose config
// names the canonical paths, waits for its agent's ready line on the
// console, pauses it and snapshots it into dir (an existing, empty
// directory), then shuts it down. Its own files live in workDir, which
// it removes. A failure leaves dir empty and nothing running.
func (v *VM) BuildTemplate(ctx context.Context, workDir, dir string, timeout time.Duration) (retErr error) {
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
	b.snap = &snapMode{dir: dir}
	defer os.RemoveAll(workDir)
	defer func() {
		if retErr != nil {
			emptyDir(dir)
		}
	}()
	for _, d := range []string{spec.StateDir, spec.SharedDir} {
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
	if err := b.client.Pause(ctx); err != nil {
		return fmt.Errorf("pausing the template VM: %w", err)
	}
	if err := b.client.Snapshot(ctx, VmSnapshotConfig{DestinationURL: "file://" + SnapshotDir}); err != nil {
		return fmt.Errorf("snapshotting the template VM into %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, SnapshotConfigName)); err != nil {
		return fmt.Errorf("the template's snapshot in %s has no %s: %w: %w", dir, SnapshotConfigName, err, errdefs.ErrDataLoss)
	}
	return nil
}

// emptyDir removes what dir holds.
func emptyDir(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// StartFromTemplate is Start for a VM restored from the template
// snapshotted in dir (by BuildTemplate of a VM with the same config):
// virtiofsd and a fresh VMM in its own mount namespace (its devices land
// in this VM's state directory), vm.restore from the snapshot, then
// vm.resume. A failure stops the VMM and virtiofsd and removes the
// sockets; a refused restore is an InvalidArgument (errdefs) the caller
// may answer by rebuilding the template.
func (v *VM) StartFromTemplate(ctx context.Context, dir string) (retErr error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := vmm.Prepare(v.proc.Load(), v.spec.ID, v.spec.StateDir); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, SnapshotConfigName)); err != nil {
		return fmt.Errorf("VM template snapshot %s: %w: %w", dir, err, errdefs.ErrNotFound)
	}
	v.snap = &snapMode{dir: dir, restore: true}
	defer func() {
		if retErr != nil {
			v.cleanupLocked()
		}
	}()
	if err := v.launchLocked(ctx); err != nil {
		return err
	}
	if err := v.client.Restore(ctx, RestoreConfig{SourceURL: "file://" + SnapshotDir}); err != nil {
		return fmt.Errorf("restoring VM %s from the template in %s: %w", v.spec.ID, dir, err)
	}
	if err := v.client.Resume(ctx); err != nil {
		return fmt.Errorf("resuming VM %s restored from the template in %s: %w", v.spec.ID, dir, err)
	}
	return nil
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
