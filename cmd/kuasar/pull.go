package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/kuasar-go/kuasar/images"
)

func init() {
	register("pull", "fetch an image (registry, OCI layout or OCI archive) into the local store", runPull)
}

func runPull(ctx context.Context, env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	plainHTTP := fs.Bool("plain-http", false, "talk plain HTTP to the registry (automatic for localhost, 127.0.0.1 and [::1])")
	dockerConfig := fs.String("docker-config", "", "read registry credentials from this docker config.json (default $DOCKER_CONFIG/config.json or ~/.docker/config.json)")
	var imf imageFlags
	imf.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: kuasar pull [flags] REF\n\nREF is a registry reference (ghcr.io/org/app:tag), an OCI layout directory\nor an OCI archive (.tar), optionally PATH:NAME. Prints the name and manifest digest.\n\nflags:")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, env, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(env.stderr, "kuasar pull: %v\n", err)
		return exitImageFailure
	}
	limitOpts, err := imf.options()
	if err != nil {
		return fail(err)
	}
	s, err := openImageStore(env)
	if err != nil {
		return fail(err)
	}
	opts := append([]images.Option{images.WithPlainHTTP(*plainHTTP), images.WithProgress(progressWriter(env))}, limitOpts...)
	if *dockerConfig != "" {
		opts = append(opts, images.WithDockerConfig(*dockerConfig))
	}
	t, err := images.ParseTarget(fs.Arg(0))
	if err != nil {
		return fail(err)
	}
	var e images.Entry
	switch t.Kind {
	case images.SourceRegistry:
		e, err = s.Pull(ctx, t.Ref, opts...)
	case images.SourceLayout, images.SourceArchive:
		e, err = s.Import(ctx, t.Path, t.Ref, opts...)
	default:
		err = fmt.Errorf("%s is a bare Wasm module: there is nothing to pull, run it directly (kuasar run %s) or build an image (kuasar image build --wasm %s --tag REF --output DIR)", t.Path, t.Path, t.Path)
	}
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(env.stdout, "%s %s %s\n", e.Name, e.Manifest.Digest, e.Kind)
	return 0
}
