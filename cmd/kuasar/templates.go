package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kuasar-go/kuasar/cmd/internal/backends"
	"github.com/kuasar-go/kuasar/sandboxer/config"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

func (c *cli) newTemplatesCommand() *cobra.Command {
	dir := filepath.Join(c.env.stateDir, "vm-templates")
	return &cobra.Command{
		Use:       "vm-templates [build|rm]",
		Short:     "List the VM templates 'kuasar run --isolation vm' restores from, build the default one ahead of time (build), or remove them (rm)",
		Long:      "Lists the VM templates in " + dir + "; build makes the one of the configured default sizes now\n(so the first run is restored, not booted); rm removes them all, their memory files on /dev/shm too\n(running VMs are not affected); the next VM run builds one again.",
		GroupID:   "host",
		Args:      cobra.MatchAll(cobra.MaximumNArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"build", "rm"},
		RunE: c.action(func(cmd *cobra.Command, args []string) int {
			b, err := vmbackend.New(c.ctx, vmbackend.WithTemplateDir(dir))
			if err != nil {
				fmt.Fprintf(c.env.stderr, "kuasar vm-templates: %v\n", err)
				return exitKuasarError
			}
			switch {
			case len(args) == 0:
				for _, t := range b.TemplateInfos() {
					fmt.Fprintf(c.env.stdout, "%s\t%s\n", t.Dir, t.Hypervisor)
				}
			case args[0] == "build":
				t, err := buildTemplate(c.ctx, dir)
				if err != nil {
					fmt.Fprintf(c.env.stderr, "kuasar vm-templates build: %v\n", err)
					return exitKuasarError
				}
				if t == "" {
					fmt.Fprintln(c.env.stderr, "kuasar vm-templates build: templates are off, or the default hypervisor has none ([hypervisor] default, [hypervisor.NAME] template, rootfs_mode)")
					return 0
				}
				fmt.Fprintln(c.env.stdout, t)
			default:
				if err := b.RemoveTemplates(c.ctx); err != nil {
					fmt.Fprintf(c.env.stderr, "kuasar vm-templates rm: %v\n", err)
					return exitKuasarError
				}
			}
			return 0
		}),
		Annotations: map[string]string{annotationUsageExit: strconv.Itoa(exitKuasarError)},
	}
}

// templateCheck is `kuasar check`'s line on VM templates: the setting of
// each hypervisor that has templates (QEMU; Cloud Hypervisor, verified
// against its specification only), and the templates `kuasar run` and
// the sandboxer keep, by hypervisor.
func templateCheck(ctx context.Context, hv vmbackend.Config, dirs ...string) (string, checkStatus, string, string) {
	var on, off []string
	for _, n := range []string{vm.QEMU, vm.CloudHypervisor} {
		if h, _ := hv.Get(n); h.Template == vmbackend.TemplateOff {
			off = append(off, n)
		} else {
			on = append(on, n)
		}
	}
	if len(on) == 0 {
		return "vm templates", checkOK, "off ([hypervisor.qemu] and [hypervisor.cloud-hypervisor] template): every VM boots", ""
	}
	detail := "auto for " + strings.Join(on, ", ") + ": VMs of the default sizes are restored from a template"
	if len(off) > 0 {
		detail += " (off for " + strings.Join(off, ", ") + ")"
	}
	for _, d := range dirs {
		b, err := vmbackend.New(ctx, vmbackend.WithTemplateDir(d))
		if err != nil {
			return "vm templates", checkWarn, err.Error(), "correct [hypervisor.NAME] template"
		}
		ts := b.TemplateInfos()
		detail += fmt.Sprintf("; %d in %s", len(ts), d)
		if len(ts) > 0 {
			n := map[string]int{}
			var names []string
			for _, t := range ts {
				if n[t.Hypervisor]++; n[t.Hypervisor] == 1 {
					names = append(names, t.Hypervisor)
				}
			}
			var per []string
			for _, h := range names {
				per = append(per, fmt.Sprintf("%s %d", h, n[h]))
			}
			detail += " (" + strings.Join(per, ", ") + ")"
		}
	}
	return "vm templates", checkOK, detail, ""
}

// buildTemplate builds the template of the configured default VM sizes in
// dir (KUASAR_CONFIG or the default configuration) and returns its
// directory, "" when the configuration uses none.
func buildTemplate(ctx context.Context, dir string) (string, error) {
	cfgPath := os.Getenv("KUASAR_CONFIG")
	mustExist := cfgPath != ""
	if cfgPath == "" {
		cfgPath = config.DefaultPath
	}
	cfg, err := backends.Load(cfgPath, mustExist)
	if err != nil {
		return "", err
	}
	b, err := vmbackend.New(ctx, append(cfg.VM.Options(), vmbackend.WithTemplateDir(dir), vmbackend.WithoutPool())...)
	if err != nil {
		return "", err
	}
	return b.BuildTemplates(ctx)
}
