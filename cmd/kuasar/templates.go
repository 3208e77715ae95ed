package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

func init() {
	register("vm-templates", "list the VM templates `kuasar run --isolation vm` restores from, or remove them (rm)", templatesCommand)
}

// templatesCommand lists the VM templates kept under the state directory
// or, with "rm", removes them all (their memory files on /dev/shm too);
// the next VM run builds a template again.
func templatesCommand(ctx context.Context, env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("vm-templates", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	dir := filepath.Join(env.stateDir, "vm-templates")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: kuasar vm-templates [rm]\n\nLists the VM templates in "+dir+"; rm removes them (running VMs are not affected).")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitKuasarError
	}
	b, err := vmbackend.New(ctx, vmbackend.WithTemplateDir(dir))
	if err != nil {
		fmt.Fprintf(env.stderr, "kuasar vm-templates: %v\n", err)
		return exitKuasarError
	}
	switch fs.Arg(0) {
	case "":
		for _, t := range b.Templates() {
			fmt.Fprintln(env.stdout, t)
		}
	case "rm":
		if err := b.RemoveTemplates(ctx); err != nil {
			fmt.Fprintf(env.stderr, "kuasar vm-templates rm: %v\n", err)
			return exitKuasarError
		}
	default:
		fs.Usage()
		return exitKuasarError
	}
	return 0
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
