package vmbackend

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/cloudhypervisor"
	"github.com/kuasar-go/kuasar/vm/internal/qemu"
	"github.com/kuasar-go/kuasar/vm/internal/template"
)

// VM templates: a QEMU or Cloud Hypervisor sandbox whose sizes are the
// configured defaults is restored from a template (a guest booted once
// and saved when its agent served, see vm/internal/template) instead of
// booting, unless the config ([hypervisor.NAME] template = "off"), the
// pod (TemplateAnnotation) or `kuasar run --vm-template off` says
// otherwise. Whenever no template fits or restoring fails because of the
// template, the sandbox boots cold and the reason is logged. Both drivers
// implement templater; the backend's path is the same for both. (Cloud
// Hypervisor's is verified against its OpenAPI description and a fake
// VMM only: it cannot run where this was written.)

// templater is a driver that can build templates and restore from them:
// the QEMU driver (vm/internal/qemu) and the Cloud Hypervisor driver
// (vm/internal/cloudhypervisor).
type templater interface {
	driver
	// Templatable says why this VM cannot come from a template, "" when
	// it can.
	Templatable() string
	// TemplateKey is everything a template for this VM must share with
	// it.
	TemplateKey(ctx context.Context) (template.Key, error)
	// BuildTemplate boots a VM like this one in workDir and saves it
	// into mem and state (a template.BuildFunc once bound).
	BuildTemplate(ctx context.Context, workDir string, timeout time.Duration, mem, state string) error
	// StartFromTemplate starts this VM restored from t. An error caused
	// by the template itself is a template.Unusable.
	StartFromTemplate(ctx context.Context, t *template.Template) error
	// TemplateMemoryMapped reports whether clones map the template's
	// memory (then they get the store's sealed copy, see
	// vm/internal/template) rather than copy it at restore.
	TemplateMemoryMapped() bool
	// TemplateSocketRoom is how long the paths of the unix sockets a
	// template build's VMM makes below its work directory get.
	TemplateSocketRoom() int
}

var (
	_ templater = (*qemu.VM)(nil)
	_ templater = (*cloudhypervisor.VM)(nil)
)

// Template settings ([hypervisor.NAME] template, TemplateAnnotation).
const (
	// TemplateAuto restores sandboxes from templates where one fits (default).
	TemplateAuto = "auto"
	// TemplateOff always boots cold.
	TemplateOff = "off"
)

// TemplateAnnotation is the pod annotation that turns templates off for
// one sandbox ("off"): its guest then shares no memory contents, kernel
// layout or random state with other sandboxes (see docs/vm.md).
const TemplateAnnotation = "kuasar.io/vm-template"

// entropyBytes is how much host randomness SetupSandbox hands the guest.
const entropyBytes = 64

// WithTemplateDir keeps VM templates below dir (their memory files on a
// tmpfs under /dev/shm where there is one). Without it, sandboxes boot
// cold.
func WithTemplateDir(dir string) Option {
	return func(b *Backend) {
		if dir == "" {
			b.templates = nil
			return
		}
		h := sha256.Sum256([]byte(dir))
		b.templateMemDir = template.DefaultMemDir(filepath.Join("kuasar-vm-templates", hex.EncodeToString(h[:8])))
		b.templates = template.NewStore(dir, b.templateMemDir)
	}
}

// RemoveTemplates removes every VM template (housekeeping, or to free
// their memory); running sandboxes are not affected.
func (b *Backend) RemoveTemplates(ctx context.Context) error {
	if b.templates == nil {
		return nil
	}
	err := b.templates.RemoveAll(ctx)
	if b.templateMemDir != "" {
		_ = os.Remove(filepath.Dir(b.templateMemDir)) // only once empty
	}
	return err
}

// reapTemplateBuilds cleans up after template builders that died with
// the process that ran them (a sandboxer or `kuasar run` SIGKILLed during
// a build): their VMMs are killed and their files removed. Builds that
// another live process runs are left alone (template.Store.Reap).
func (b *Backend) reapTemplateBuilds(ctx context.Context) {
	if b.templates == nil {
		return
	}
	if _, err := b.templates.Reap(ctx); err != nil {
		log.G(ctx).WithError(err).Warn("vm: clean up template builds interrupted by a crash")
	}
}

// Templates lists the usable VM templates: their directories.
func (b *Backend) Templates() []string {
	if b.templates == nil {
		return nil
	}
	var out []string
	for _, t := range b.templates.List() {
		out = append(out, t.Dir)
	}
	return out
}

// TemplateInfo describes one usable VM template.
type TemplateInfo struct {
	// Dir is its directory.
	Dir string
	// Hypervisor is the hypervisor it was built with ("qemu",
	// "cloud-hypervisor").
	Hypervisor string
	// VCPUs and MemoryMB are the sizes of the VMs it serves.
	VCPUs    uint32
	MemoryMB uint64
}

// TemplateInfos lists the usable VM templates with their hypervisor and
// sizes (`kuasar vm-templates`, `kuasar check`).
func (b *Backend) TemplateInfos() []TemplateInfo {
	if b.templates == nil {
		return nil
	}
	var out []TemplateInfo
	for _, t := range b.templates.List() {
		out = append(out, TemplateInfo{Dir: t.Dir, Hypervisor: t.Key.VMM, VCPUs: t.Key.VCPUs, MemoryMB: t.Key.MemoryMB})
	}
	return out
}

// FromTemplate reports whether the sandbox's VM was restored from a
// template (false when it booted cold).
func (i *Instance) FromTemplate() bool { return i.template != "" }

// noTemplate says why sandbox sb's VM d cannot come from a template, ""
// when it can.
func (b *Backend) noTemplate(sb backend.Sandbox, name string, spec vm.Spec, d driver) string {
	c := b.configs[name]
	switch {
	case b.templates == nil:
		return "no template directory configured"
	case c.Template == TemplateOff:
		return "template = \"off\" in [hypervisor." + name + "]"
	case sb.Annotations[TemplateAnnotation] == TemplateOff:
		return "pod annotation " + TemplateAnnotation + "=off"
	}
	q, ok := d.(templater)
	if !ok {
		return "templates are implemented for qemu and cloud-hypervisor only"
	}
	if why := q.Templatable(); why != "" {
		return why
	}
	if vcpus, mem := vm.Sizes(c, vm.Resources{}); spec.VCPUs != vcpus || spec.MemoryMB != mem {
		return fmt.Sprintf("the pod's sizes (%d vCPUs, %d MiB) differ from the template's defaults (%d, %d)", spec.VCPUs, spec.MemoryMB, vcpus, mem)
	}
	return ""
}

// startVM starts d: restored from a template when one fits, booted cold
// otherwise. A failed restore that was the template's fault removes the
// template and boots cold with a fresh driver, which it returns.
func (b *Backend) startVM(ctx context.Context, inst *Instance, name string, d driver) (driver, error) {
	sb, spec := inst.sb, inst.spec
	lg := log.G(ctx).WithField("sandbox", sb.ID)
	why := b.noTemplate(sb, name, spec, d)
	if why == "" {
		digest, err := b.restore(ctx, d.(templater))
		if err == nil {
			inst.template = digest
			return d, nil
		}
		var te template.Unusable
		if !errors.As(err, &te) && !errors.Is(err, errTemplateUnavailable) {
			return d, fmt.Errorf("restoring sandbox %s from a VM template: %w", sb.ID, err)
		}
		why = err.Error()
		// The failed driver cleaned up after itself; boot with a new one.
		if d, err = b.newDriver(name, spec); err != nil {
			return nil, err
		}
		lg.WithField("reason", why).Warn("vm: booting cold")
	} else {
		lg.WithField("reason", why).Debug("vm: booting cold")
	}
	return d, d.Start(ctx)
}

// errTemplateUnavailable marks a template that could not be made.
var errTemplateUnavailable = errors.New("no VM template")

// restore restores q from the template for its key (built first when
// missing), and returns the template's digest.
func (b *Backend) restore(ctx context.Context, q templater) (string, error) {
	t, key, err := b.template(ctx, q)
	if err != nil {
		return "", err
	}
	defer t.Close() // the clone's QEMU holds its own copy of the sealed memory
	t0 := time.Now()
	rctx, cancel := context.WithTimeout(ctx, b.agentTimeout)
	defer cancel()
	err = q.StartFromTemplate(rctx, t)
	var te template.Unusable
	if errors.As(err, &te) {
		_ = b.templates.Invalidate(context.WithoutCancel(ctx), t, err)
	}
	if err != nil {
		return "", err
	}
	log.G(ctx).WithField("template", key.Digest()).WithField("took", time.Since(t0)).Debug("vm: restored from template")
	return key.Digest(), nil
}

// template returns the template for q's key, built first when missing:
// with the sealed copy of its memory when q's clones map it.
func (b *Backend) template(ctx context.Context, q templater) (*template.Template, template.Key, error) {
	b.knownVersions.Do(func() {
		// The QEMU versions the kept templates recorded, by binary
		// identity: no `qemu -version` per process (see KnowVersion).
		for _, t := range b.templates.List() {
			if t.Key.VMM == vm.QEMU {
				qemu.KnowVersion(t.Key.Binary, t.Key.Version)
			}
		}
	})
	key, err := q.TemplateKey(ctx)
	if err != nil {
		return nil, key, fmt.Errorf("%w: %w", errTemplateUnavailable, err)
	}
	get := b.templates.Get
	if !q.TemplateMemoryMapped() {
		get = b.templates.GetCopied
	}
	t, err := get(ctx, key, func(ctx context.Context, key template.Key, mem, state string) error {
		// The store's work directory: the builder's VMM is recorded and
		// marked there, so it is reaped if this process dies. Its sockets
		// go in work/vm.
		work := template.WorkDir(ctx)
		if err := template.CheckSocketRoom(work, q.TemplateSocketRoom()); err != nil {
			return err
		}
		return q.BuildTemplate(ctx, work, b.agentTimeout, mem, state)
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, key, err
		}
		return nil, key, fmt.Errorf("%w: %w", errTemplateUnavailable, err)
	}
	return t, key, nil
}

// BuildTemplates makes sure the template for the default sizes of the
// default hypervisor exists, building it when missing, and returns its
// directory: ahead of time, so that the first sandbox is restored rather
// than paying a cold boot plus the save (the sandboxer calls it in the
// background at start, `kuasar vm-templates build` from the command
// line). It does nothing ("", nil) when templates are off or the default
// hypervisor has none (StratoVirt).
func (b *Backend) BuildTemplates(ctx context.Context) (string, error) {
	name := b.defaultHV
	c, ok := b.configs[name]
	if !ok || b.templates == nil || c.Template == TemplateOff || c.RootfsMode == vm.ShareBlock {
		// Block mode attaches disks per VM: it never restores.
		return "", nil
	}
	vcpus, mem := vm.Sizes(c, vm.Resources{})
	// The directories only name things in the key (replaced by fixed
	// names there); nothing is created in them.
	placeholder := filepath.Join(os.TempDir(), "kuasar-template-key")
	spec := vm.Spec{ID: "template-key", StateDir: filepath.Join(placeholder, "vm"), SharedDir: filepath.Join(placeholder, "shared"), VCPUs: vcpus, MemoryMB: mem}
	d, err := b.newDriver(name, spec)
	if err != nil {
		return "", err
	}
	if why := b.noTemplate(backend.Sandbox{}, name, spec, d); why != "" {
		return "", nil
	}
	t0 := time.Now()
	t, key, err := b.template(ctx, d.(templater))
	if err != nil {
		return "", fmt.Errorf("building the VM template for the default sizes (%d vCPUs, %d MiB): %w", vcpus, mem, err)
	}
	defer t.Close()
	log.G(ctx).WithField("template", key.Digest()).WithField("took", time.Since(t0)).Info("vm: template for the default sizes ready")
	return t.Dir, nil
}

// entropy is fresh host randomness for the guest's pool.
func entropy() []byte {
	b := make([]byte, entropyBytes)
	if _, err := rand.Read(b); err != nil {
		return nil
	}
	return b
}

// checkTemplateSetting validates [hypervisor.NAME] template.
func checkTemplateSetting(name string, c vm.Config) error {
	switch c.Template {
	case "", TemplateAuto, TemplateOff:
		return nil
	}
	return fmt.Errorf("template %q in [hypervisor.%s]: use auto or off: %w", c.Template, name, errdefs.ErrInvalidArgument)
}
