package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/kuasar-go/kuasar/internal/crashpoint"
	"github.com/kuasar-go/kuasar/internal/unixsock"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/template"
	"github.com/kuasar-go/kuasar/vm/internal/vmm"
)

// VM templates (see vm/internal/template): the guest boots once with its
// RAM in a shared memory file, is paused as soon as its agent serves, and
// QEMU saves its device state (x-ignore-shared: the RAM stays in the
// file) over a unix socket the host copies to the template's state file.
// A clone runs the same command line with -incoming defer and its RAM
// mapped privately (copy-on-write) from the template's sealed memfd
// (template.Template.Memory), which it inherits and opens as
// /proc/self/fd/N: the clone's jail holds no path to the template, and
// the seals make every write to it fail (see vm/internal/template). It
// loads the state back over a unix socket too. The template is taken
// before any ttrpc traffic: the agent's server remembers the stream ids
// of its connection, which a clone's new client would start again from 1.

// MigrateSocketName is the unix socket the device state travels through.
const MigrateSocketName = "migrate.sock"

// AgentReadyLine is what the agent prints on the console once it serves
// (task/agent.Run); a template is taken when it appears.
const AgentReadyLine = ": serving on "

// tplMode is how a VM's RAM is backed for templating.
type tplMode struct {
	mem     string   // memory file QEMU opens (a clone: /proc/self/fd/N of memFile)
	memFile *os.File // a clone's sealed memory, inherited by QEMU
	// sealed waits until memFile is complete and sealed: a clone's QEMU
	// starts while the store may still be copying it (MemoryEarly).
	sealed   func(context.Context) error
	share    bool // true while building the template
	incoming bool // restoring from a template
}

// cloneMode is how a clone of t maps its RAM: t's sealed memory,
// inherited by QEMU as the first extra file (jailed or not). QEMU may
// start before the memory is complete (MemoryEarly): StartFromTemplate
// waits for the seal before QEMU loads any state.
func cloneMode(t *template.Template, jailed bool) (*tplMode, error) {
	f, sealed := t.MemoryEarly()
	if f == nil {
		return nil, fmt.Errorf("template %s has no sealed memory (not handed out by its store): %w", t.Dir, errdefs.ErrFailedPrecondition)
	}
	return &tplMode{mem: "/proc/self/fd/" + strconv.Itoa(vmm.InheritedFD(jailed, 0)), memFile: f, sealed: sealed, incoming: true}, nil
}

// templateArgs are the arguments that back guest RAM with the template's
// memory file; none for an ordinary VM.
func (v *VM) templateArgs(memMB uint64) []string {
	t := v.tpl
	if t == nil {
		return nil
	}
	share := "off"
	if t.share {
		share = "on"
	}
	args := []string{
		"-object", "memory-backend-file,id=kuasar-mem,size=" + strconv.FormatUint(memMB, 10) + "M,mem-path=" + optEscape(t.mem) + ",share=" + share,
		"-machine", "memory-backend=kuasar-mem",
	}
	if t.incoming {
		args = append(args, "-incoming", "defer")
	}
	return args
}

// Templatable reports why the VM cannot come from a template ("" when it
// can): disks are attached per VM (rootfs_mode "block").
func (v *VM) Templatable() string {
	if len(v.spec.Disks) > 0 {
		return "the VM has disks attached (rootfs_mode \"block\")"
	}
	return ""
}

// TemplateKey is everything a template for this VM must share with it:
// QEMU's binary and version, the guest's images, and the whole command
// line with the per-VM names (id, sockets, logs, shared directory)
// replaced by fixed ones.
func (v *VM) TemplateKey(ctx context.Context) (template.Key, error) {
	c := v.spec.Config
	accel := c.Accel
	if accel == "" || accel == "auto" {
		accel, _ = DetectAccel(ctx)
	}
	var k template.Key
	var err error
	if k.Binary, err = template.Identify(c.Path); err != nil {
		return k, err
	}
	if k.Kernel, err = template.Identify(c.Kernel); err != nil {
		return k, err
	}
	if k.Initramfs, err = template.Identify(c.Initramfs); err != nil {
		return k, err
	}
	if k.Version, err = qemuVersion(ctx, c.Path, k.Binary); err != nil {
		return k, err
	}
	cs := v.spec
	cs.ID, cs.StateDir = "template", "/template"
	if cs.SharedDir != "" {
		cs.SharedDir = "/template/shared"
	}
	canon := &VM{spec: cs}
	k.VMM = vm.QEMU
	k.Cmdline = v.Cmdline()
	k.Machine = c.Machine + "," + c.MachineOptions
	k.Accel = accel
	k.VCPUs, k.MemoryMB = v.sizes()
	k.Devices = canon.Args(accel)
	return k, nil
}

func (v *VM) sizes() (uint32, uint64) {
	if v.spec.VCPUs == 0 || v.spec.MemoryMB == 0 {
		return vm.Sizes(v.spec.Config, vm.Resources{})
	}
	return v.spec.VCPUs, v.spec.MemoryMB
}

var versions sync.Map // template.FileID → string

// qemuVersion runs `qemu -version` once per binary identity.
func qemuVersion(ctx context.Context, path string, id template.FileID) (string, error) {
	if v, ok := versions.Load(id); ok {
		return v.(string), nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, path, "-version").Output()
	if err != nil {
		return "", fmt.Errorf("%s -version: %w (check \"path\" in [hypervisor.qemu])", path, err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	versions.Store(id, line)
	return line, nil
}

// BuildTemplate boots a VM like v (same config and sizes) with its RAM in
// mem, waits for the agent's ready line on the console, pauses it and
// saves its device state to state, then ends it. Its own files (sockets,
// logs) live in workDir, which it removes. It is a template.BuildFunc
// once bound to a VM.
func (v *VM) BuildTemplate(ctx context.Context, workDir string, timeout time.Duration, mem, state string) (retErr error) {
	spec := v.spec
	spec.ID = "template-" + filepath.Base(workDir)
	spec.StateDir = filepath.Join(workDir, "vm")
	if v.spec.SharedDir != "" {
		spec.SharedDir = filepath.Join(workDir, "shared")
	}
	spec.VCPUs, spec.MemoryMB = v.sizes()
	b, err := New(spec)
	if err != nil {
		return err
	}
	b.tpl = &tplMode{mem: mem, share: true}
	for _, d := range []string{spec.StateDir, spec.SharedDir} {
		if d != "" {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return err
			}
		}
	}
	defer os.RemoveAll(workDir)
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
	q := b.qmp
	if _, err := q.Execute(ctx, "stop", nil); err != nil {
		return err
	}
	if err := setIgnoreShared(ctx, q); err != nil {
		return err
	}
	sock := b.path(MigrateSocketName)
	l, err := unixsock.Listen(sock, 0o600)
	if err != nil {
		return fmt.Errorf("listen on the migration socket: %w", err)
	}
	defer os.Remove(sock)
	defer l.Close()
	if b.uid != 0 {
		if err := os.Lchown(sock, int(b.uid), 0); err != nil {
			return err
		}
	}
	copied := make(chan error, 1)
	go func() { copied <- receive(ctx, l, state) }()
	if _, err := q.Execute(ctx, "migrate", map[string]any{"uri": "unix:" + sock}); err != nil {
		return err
	}
	if err := b.waitMigration(ctx, "query-migrate"); err != nil {
		return err
	}
	select {
	case err := <-copied:
		if err != nil {
			return fmt.Errorf("saving the template's device state: %w", err)
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	log.G(ctx).WithField("accel", b.accel).Debug("vm: template state saved")
	return nil
}

// receive accepts one connection on l and copies it into path.
func receive(ctx context.Context, l *net.UnixListener, path string) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = l.SetDeadline(dl)
	}
	c, err := l.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, c); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func setIgnoreShared(ctx context.Context, q *QMP) error {
	_, err := q.Execute(ctx, "migrate-set-capabilities", map[string]any{
		"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}},
	})
	return err
}

// waitConsole polls the console log until it holds line, QEMU exits or
// ctx ends.
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
			return fmt.Errorf("qemu exited while booting the template: %s; see %s: %w", p.Tail(2000), v.ConsoleLog(), errdefs.ErrUnavailable)
		}
		return fmt.Errorf("the template's guest agent did not report ready on the console (%q) in time: %w; see %s", line, ctx.Err(), v.ConsoleLog())
	})
}

// migrationStatus is query-migrate's answer.
type migrationStatus struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
}

// waitMigration polls query-migrate until the migration completed; a
// failed migration or an exited QEMU ends the wait with an error.
func (v *VM) waitMigration(ctx context.Context, what string) error {
	p := v.proc.Load()
	var last migrationStatus
	return vmm.Poll(ctx, p, 2*time.Millisecond, func() error {
		raw, err := v.qmp.Execute(ctx, "query-migrate", nil)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &last); err != nil {
			return err
		}
		switch last.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return &TemplateError{Err: fmt.Errorf("migration %s: %s", last.Status, last.ErrorDesc)}
		}
		return errdefs.ErrNotFound
	}, func(exited bool, err error) error {
		var te *TemplateError
		if errors.As(err, &te) {
			return err
		}
		if exited {
			return fmt.Errorf("qemu exited during %s (last status %q): %s: %w", what, last.Status, p.Tail(2000), errdefs.ErrUnavailable)
		}
		return fmt.Errorf("%s did not complete (last status %q): %w", what, last.Status, ctx.Err())
	})
}

// TemplateError is a restore that failed because of the template itself
// (QEMU refused its state): the caller removes the template and boots
// cold.
type TemplateError struct{ Err error }

// Error says the template is unusable and why.
func (e *TemplateError) Error() string { return "VM template unusable: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *TemplateError) Unwrap() error { return e.Err }

// StartFromTemplate is Start for a VM restored from t: QEMU maps t's
// memory privately, loads its device state and resumes the guest, whose
// agent then answers on this VM's own sockets. A failure leaves no
// process or socket behind; when QEMU refused the template's state
// (rather than being killed) the error is a *TemplateError.
func (v *VM) StartFromTemplate(ctx context.Context, t *template.Template) (retErr error) {
	jailed := vmm.CanJail()
	tpl, err := cloneMode(t, jailed)
	if err != nil {
		return err
	}
	if !jailed {
		// Without a jail, QEMUs run as one user and can reach one
		// another's descriptors: none gets the memory before it is
		// sealed. A jailed QEMU (a uid of its own, its own /proc) runs
		// nothing of a guest's before the seal, below.
		if err := tpl.sealed(ctx); err != nil {
			return err
		}
	}
	v.tpl = tpl
	if err := v.Start(ctx); err != nil {
		// A QEMU that exited by itself before QMP answered could not use
		// the template (its memory file gone, say); one that was killed
		// or never ran is a plain failure.
		if p := v.proc.Load(); p != nil && p.Exited() {
			return v.restoreFailed(p, err)
		}
		return err
	}
	defer func() {
		if retErr != nil {
			_ = v.Stop(context.WithoutCancel(ctx), time.Second)
		}
		_ = os.Remove(v.path(MigrateSocketName))
	}()
	v.mu.Lock()
	q, p := v.qmp, v.proc.Load()
	v.mu.Unlock()
	if err := setIgnoreShared(ctx, q); err != nil {
		return err
	}
	// The guest's memory must be complete, and sealed against every
	// descriptor (QEMU's read-write one too), before QEMU loads the
	// device state (virtio reads its rings from guest memory) and long
	// before the guest runs.
	crashpoint.Hit("vm.template-sealing")
	if err := tpl.sealed(ctx); err != nil {
		return err
	}
	sock := v.path(MigrateSocketName)
	if _, err := q.Execute(ctx, "migrate-incoming", map[string]any{"uri": "unix:" + sock}); err != nil {
		return err
	}
	if err := send(ctx, sock, t.StatePath); err != nil && p.Exited() {
		return v.restoreFailed(p, err)
	} else if err != nil {
		return fmt.Errorf("sending the template's device state to qemu: %w", err)
	}
	// The template was paused when saved: the clone arrives paused.
	err = vmm.Poll(ctx, p, 2*time.Millisecond, func() error {
		s, err := q.QueryStatus(ctx)
		if err != nil {
			return err
		}
		switch s.Status {
		case "inmigrate":
			return errdefs.ErrNotFound
		case "paused", "postmigrate":
			_, err := q.Execute(ctx, "cont", nil)
			return err
		case "running":
			return nil
		}
		return &TemplateError{Err: fmt.Errorf("guest in state %q after loading the template", s.Status)}
	}, func(exited bool, err error) error {
		var te *TemplateError
		if errors.As(err, &te) {
			return err
		}
		if exited {
			return v.restoreFailed(p, err)
		}
		return fmt.Errorf("restoring from the template did not finish: %w", ctx.Err())
	})
	return err
}

// restoreFailed words a restore whose QEMU exited: killed by a signal is
// a plain failure, an exit of its own means it refused the state.
func (v *VM) restoreFailed(p *vmm.Process, cause error) error {
	<-p.Done()
	var ee *exec.ExitError
	if errors.As(p.ExitError(), &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Errorf("qemu of VM %s was killed by signal %d (%v) while restoring from a template: %w", v.spec.ID, int(ws.Signal()), ws.Signal(), errdefs.ErrUnavailable)
		}
	}
	return &TemplateError{Err: fmt.Errorf("qemu exited while loading the state (%v): %s", cause, p.Tail(2000))}
}

// send connects to the migration socket and writes the state file into it.
func send(ctx context.Context, sock, state string) error {
	f, err := os.Open(state)
	if err != nil {
		return err
	}
	defer f.Close()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	_, err = io.Copy(c, f)
	return err
}

// RestoreArgs is the command line StartFromTemplate runs QEMU with for
// t and accel without a jail (benchmarks compare the driver with QEMU
// started by hand): start QEMU with t.Memory() as its first extra file
// (descriptor 3), which the memory backend opens.
func (v *VM) RestoreArgs(accel string, t *template.Template) []string {
	c := &VM{spec: v.spec, tpl: &tplMode{mem: "/proc/self/fd/" + strconv.Itoa(vmm.InheritedFD(false, 0)), incoming: true}}
	return c.Args(accel)
}
