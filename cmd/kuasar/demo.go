package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/kuasar-go/kuasar/internal/demo"
	"github.com/kuasar-go/kuasar/internal/stack"
)

func init() {
	register("demo", "Run a Wasm pod and a VM pod through crictl on a private containerd + kuasar-sandboxer, then remove everything (root)", demoCommand)
}

// demoCommand is `kuasar demo`; the logic is internal/demo's. Exit codes:
// 0 done, 1 failed, 2 bad usage, 130 interrupted (everything removed).
func demoCommand(ctx context.Context, env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	noVM := fs.Bool("no-vm", false, "run the Wasm pod only (no QEMU or guest kernel here)")
	binDir := fs.String("bin", "", "directory holding kuasar-sandboxer and containerd-shim-kuasar-v1 (default: beside kuasar, else $PATH)")
	containerd := fs.String("containerd", "", "containerd binary (default: $KUASAR_CONTAINERD, $PATH, then ~/.cache/kuasar-tools as make deps builds it)")
	crictl := fs.String("crictl", "", "crictl binary (default: $KUASAR_CRICTL, $PATH, then ~/.cache/kuasar-tools)")
	ctr := fs.String("ctr", "", "ctr binary (default: $KUASAR_CTR, $PATH, then ~/.cache/kuasar-tools)")
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "usage: kuasar demo [flags]\n\nStarts a private containerd and kuasar-sandboxer under one temporary directory, runs a\nWasm pod and a VM pod through crictl, prints their output, exit codes and timings, and\nremoves everything, also on ^C (exit code 130). Needs root.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	_, err := demo.Run(ctx, demo.Options{
		Out:  env.stdout,
		NoVM: *noVM,
		Stack: stack.Options{
			BinDir: *binDir,
			Tools:  stack.Tools{Containerd: *containerd, Crictl: *crictl, Ctr: *ctr},
		},
	})
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(env.stderr, "kuasar demo: interrupted; everything it started was removed")
			return 130
		}
		fmt.Fprintln(env.stderr, "kuasar demo:", err)
		return 1
	}
	return 0
}
