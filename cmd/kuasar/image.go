package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kuasar-go/kuasar/images"
)

func init() {
	register("image", "build, list and remove images (image build, image ls, image rm)", runImage)
}

func runImage(ctx context.Context, env *cliEnv, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(env.stderr, "usage: kuasar image build|ls|rm [flags]")
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "build":
		return runImageBuild(ctx, env, args[1:])
	case "ls", "list":
		return runImagesList(ctx, env, args[1:])
	case "rm", "remove":
		return runImageRemove(ctx, env, args[1:])
	}
	fmt.Fprintf(env.stderr, "kuasar image: unknown subcommand %q (have build, ls, rm)\n", args[0])
	return 2
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func runImageBuild(ctx context.Context, env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("image build", flag.ContinueOnError)
	wasmFile := fs.String("wasm", "", "the Wasm module to package")
	artifact := fs.Bool("artifact", false, "build the CNCF Wasm artifact (config application/vnd.wasm.config.v0+json, layer application/wasm) instead of a wasi/wasm image")
	rootfs := fs.String("rootfs", "", "build a Linux image from this directory instead of a Wasm module")
	entrypoint := fs.String("entrypoint", "", "entrypoint of a --rootfs image, space separated (e.g. \"sleep 2147483647\")")
	tag := fs.String("tag", "", "the image name, e.g. ghcr.io/org/app:v1 (required)")
	push := fs.Bool("push", false, "push the image to the registry named by --tag")
	output := fs.String("output", "", "write an OCI layout to this directory, or an OCI archive when it ends in .tar")
	plainHTTP := fs.Bool("plain-http", false, "push over plain HTTP (automatic for localhost registries)")
	dockerConfig := fs.String("docker-config", "", "registry credentials file (default ~/.docker/config.json)")
	var imf imageFlags
	imf.registerTimeouts(fs)
	var annotations, envs stringList
	fs.Var(&annotations, "annotation", "manifest annotation KEY=VALUE, e.g. kuasar.io/isolation=wasm; repeatable")
	fs.Var(&envs, "env", "environment KEY=VALUE of a --rootfs image; repeatable")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: kuasar image build (--wasm FILE [--artifact] | --rootfs DIR --entrypoint CMD) --tag REF (--push | --output PATH)\n\nflags:")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, env, args); !ok {
		return code
	}
	usageErr := func(msg string) int {
		fmt.Fprintf(env.stderr, "kuasar image build: %s\n", msg)
		fs.Usage()
		return 2
	}
	switch {
	case fs.NArg() != 0:
		return usageErr("unexpected arguments " + strings.Join(fs.Args(), " "))
	case (*wasmFile == "") == (*rootfs == ""):
		return usageErr("give exactly one of --wasm FILE or --rootfs DIR")
	case *tag == "":
		return usageErr("--tag is required")
	case !*push && *output == "":
		return usageErr("give --push, --output PATH, or both")
	case *rootfs != "" && *artifact:
		return usageErr("--artifact packages a Wasm module; it does not go with --rootfs")
	}
	fail := func(err error) int {
		fmt.Fprintf(env.stderr, "kuasar image build: %v\n", err)
		return exitImageFailure
	}
	var bopts []images.BuildOption
	for _, a := range annotations {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return fail(fmt.Errorf("--annotation %q: want KEY=VALUE: %w", a, errdefs.ErrInvalidArgument))
		}
		if k == images.AnnotationIsolation {
			if _, err := images.ParseIsolation(v); err != nil {
				return fail(fmt.Errorf("--annotation %s: %w", a, err))
			}
		}
		bopts = append(bopts, images.WithAnnotation(k, v))
	}
	var (
		img *images.MemoryImage
		err error
	)
	if *wasmFile != "" {
		b, rerr := os.ReadFile(*wasmFile)
		if rerr != nil {
			return fail(rerr)
		}
		name := filepath.Base(*wasmFile)
		if !strings.HasSuffix(name, ".wasm") {
			name += ".wasm"
		}
		if *artifact {
			img, err = images.BuildWasmArtifact(ctx, b, name, bopts...)
		} else {
			img, err = images.BuildWasmImage(ctx, b, name, bopts...)
		}
	} else {
		files, ferr := images.FilesFromDir(*rootfs)
		if ferr != nil {
			return fail(ferr)
		}
		if *entrypoint == "" {
			return usageErr("--rootfs needs --entrypoint")
		}
		img, err = images.BuildLinuxImage(ctx, files, ocispec.ImageConfig{Entrypoint: strings.Fields(*entrypoint), Env: envs}, ocispec.Platform{}, bopts...)
	}
	if err != nil {
		return fail(err)
	}
	if *output != "" {
		if strings.HasSuffix(*output, ".tar") {
			err = img.WriteArchiveFile(*output, *tag)
		} else {
			err = img.WriteLayout(*output, *tag)
		}
		if err != nil {
			return fail(fmt.Errorf("write %s: %w", *output, err))
		}
	}
	if *push {
		timeoutOpts, err := imf.options()
		if err != nil {
			return fail(err)
		}
		opts := append([]images.Option{images.WithPlainHTTP(*plainHTTP)}, timeoutOpts...)
		if *dockerConfig != "" {
			opts = append(opts, images.WithDockerConfig(*dockerConfig))
		}
		if err := img.Push(ctx, *tag, opts...); err != nil {
			return fail(err)
		}
	}
	fmt.Fprintf(env.stdout, "%s %s\n", *tag, img.Root.Digest)
	return 0
}

func runImageRemove(ctx context.Context, env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("image rm", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: kuasar image rm NAME...\n\nRemoves images from the local store (names as 'kuasar images' lists them)\nand frees the blobs and rootfs trees no other image uses.")
	}
	if code, ok := parseFlags(fs, env, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	s, err := openImageStore(env)
	if err == nil {
		err = s.Remove(ctx, fs.Args()...)
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "kuasar image rm: %v\n", err)
		return exitImageFailure
	}
	return 0
}
