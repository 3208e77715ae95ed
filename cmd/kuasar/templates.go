package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

func (c *cli) newTemplatesCommand() *cobra.Command {
	dir := filepath.Join(c.env.stateDir, "vm-templates")
	return &cobra.Command{
		Use:       "vm-templates [rm]",
		Short:     "List the VM templates 'kuasar run --isolation vm' restores from, or remove them (rm)",
		Long:      "Lists the VM templates in " + dir + "; rm removes them all, their memory files\non /dev/shm too (running VMs are not affected); the next VM run builds one again.",
		GroupID:   "host",
		Args:      cobra.MatchAll(cobra.MaximumNArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"rm"},
		RunE: c.action(func(cmd *cobra.Command, args []string) int {
			b, err := vmbackend.New(c.ctx, vmbackend.WithTemplateDir(dir))
			if err != nil {
				fmt.Fprintf(c.env.stderr, "kuasar vm-templates: %v\n", err)
				return exitKuasarError
			}
			if len(args) == 0 {
				for _, t := range b.Templates() {
					fmt.Fprintln(c.env.stdout, t)
				}
				return 0
			}
			if err := b.RemoveTemplates(c.ctx); err != nil {
				fmt.Fprintf(c.env.stderr, "kuasar vm-templates rm: %v\n", err)
				return exitKuasarError
			}
			return 0
		}),
		Annotations: map[string]string{annotationUsageExit: strconv.Itoa(exitKuasarError)},
	}
}

// templateCheck is `kuasar check`'s line on VM templates: the setting,
// and the templates `kuasar run` and the sandboxer keep.
func templateCheck(ctx context.Context, setting string, dirs ...string) (string, checkStatus, string, string) {
	if setting == vmbackend.TemplateOff {
		return "vm templates", checkOK, "off ([hypervisor.qemu] template): every VM boots", ""
	}
	detail := "auto: QEMU VMs of the default sizes are restored from a template"
	for _, d := range dirs {
		b, err := vmbackend.New(ctx, vmbackend.WithTemplateDir(d))
		if err != nil {
			return "vm templates", checkWarn, err.Error(), "correct [hypervisor.qemu] template"
		}
		detail += fmt.Sprintf("; %d in %s", len(b.Templates()), d)
	}
	return "vm templates", checkOK, detail, ""
}
