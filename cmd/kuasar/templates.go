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
