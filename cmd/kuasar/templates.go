package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kuasar-go/kuasar/cmd/internal/backends"
	"github.com/kuasar-go/kuasar/sandboxer/config"

	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

func init() {
	register("vm-templates", "list the VM templates `kuasar run --isolation vm` restores from, build the default one ahead of time (build), or remove them (rm)", templatesCommand)
}

// templatesCommand lists the VM templates kept under the state directory
// or, with "rm", removes them all (their memory files on /dev/shm too);
// the next VM run builds a template again.
func templatesCommand(ctx context.Context, env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("vm-templates", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	dir := filepath.Join(env.stateDir, "vm-templates")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: kuasar vm-templates [build|rm]\n\nLists the VM templates in "+dir+"; build makes the one of the configured default sizes now\n(so the first run is restored, not booted); rm removes them (running VMs are not affected).")
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
	case "build":
		t, err := buildTemplate(ctx, dir)
		if err != nil {
			fmt.Fprintf(env.stderr, "kuasar vm-templates build: %v\n", err)
			return exitKuasarError
		}
		if t == "" {
			fmt.Fprintln(env.stderr, "kuasar vm-templates build: templates are off, or the default hypervisor has none ([hypervisor] default, [hypervisor.qemu] template, rootfs_mode)")
			return 0
		}
		fmt.Fprintln(env.stdout, t)
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
