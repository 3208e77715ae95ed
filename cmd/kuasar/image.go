package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/kuasar-go/kuasar/images"
)

func (c *cli) newImageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "image",
		Short:   "Build, list, inspect, tag, push and remove images",
		GroupID: "image",
		Args:    cobra.NoArgs,
		RunE: c.action(func(cmd *cobra.Command, args []string) int {
			cmd.Help()
			return exitUsage
		}),
	}
	cmd.AddCommand(c.newImageBuildCommand(), c.imageListCommand("ls", []string{"list"}), c.newImageRemoveCommand(),
		c.newImageInspectCommand(), c.newImageTagCommand(), c.newImagePushCommand(), c.newImagePruneCommand())
	return cmd
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
func (l *stringList) Type() string       { return "KEY=VALUE" }

func (c *cli) newImageBuildCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "build (--wasm FILE [--artifact] | --rootfs DIR --entrypoint CMD) --tag REF (--push | --output PATH)",
		Short: "Build a Wasm or Linux image and push it or write it as an OCI layout or archive",
		Example: `  kuasar image build --wasm app.wasm --tag ghcr.io/org/app:v1 --output app.tar
  kuasar image build --wasm app.wasm --artifact --tag localhost:5000/app:v1 --push`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	wasmFile := fs.String("wasm", "", "the Wasm module to package")
	artifact := fs.Bool("artifact", false, "build the CNCF Wasm artifact (config application/vnd.wasm.config.v0+json, layer application/wasm) instead of a wasi/wasm image")
	rootfs := fs.String("rootfs", "", "build a Linux image from this directory instead of a Wasm module")
	entrypoint := fs.String("entrypoint", "", "entrypoint of a --rootfs image, space separated (e.g. \"sleep 2147483647\")")
	tag := fs.StringP("tag", "t", "", "the image name, e.g. ghcr.io/org/app:v1 (required)")
	push := fs.Bool("push", false, "push the image to the registry named by --tag")
	output := fs.StringP("output", "o", "", "write an OCI layout to this directory, or an OCI archive when it ends in .tar")
	plainHTTP := fs.Bool("plain-http", false, "push over plain HTTP (automatic for localhost registries)")
	dockerConfig := fs.String("docker-config", "", "registry credentials file (default ~/.docker/config.json)")
	var imf imageFlags
	imf.registerTimeouts(fs)
	var annotations, envs stringList
	fs.Var(&annotations, "annotation", "manifest annotation KEY=VALUE, e.g. kuasar.io/isolation=wasm; repeatable")
	fs.Var(&envs, "env", "environment KEY=VALUE of a --rootfs image; repeatable")
	cmd.RegisterFlagCompletionFunc("wasm", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"wasm"}, cobra.ShellCompDirectiveFilterFileExt
	})
	cmd.RegisterFlagCompletionFunc("rootfs", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return nil, cobra.ShellCompDirectiveFilterDirs
	})
	cmd.RunE = c.action(func(cmd *cobra.Command, args []string) int {
		return imageBuild(c.ctx, c.env, *wasmFile, *artifact, *rootfs, *entrypoint, *tag, *push, *output, *plainHTTP, *dockerConfig, &imf, annotations, envs)
	})
	return cmd
}

// imageBuild builds the image `kuasar image build`'s flags describe.
func imageBuild(ctx context.Context, env *cliEnv, wasmFile string, artifact bool, rootfs, entrypoint, tag string, push bool, output string, plainHTTP bool, dockerConfig string, imf *imageFlags, annotations, envs stringList) int {
	usageErr := func(msg string) int {
		fmt.Fprintf(env.stderr, "kuasar image build: %s\nRun 'kuasar image build --help' for usage.\n", msg)
		return exitUsage
	}
	switch {
	case (wasmFile == "") == (rootfs == ""):
		return usageErr("give exactly one of --wasm FILE or --rootfs DIR")
	case tag == "":
		return usageErr("--tag is required")
	case !push && output == "":
		return usageErr("give --push, --output PATH, or both")
	case rootfs != "" && artifact:
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
	if wasmFile != "" {
		b, rerr := os.ReadFile(wasmFile)
		if rerr != nil {
			return fail(rerr)
		}
		name := filepath.Base(wasmFile)
		if !strings.HasSuffix(name, ".wasm") {
			name += ".wasm"
		}
		if artifact {
			img, err = images.BuildWasmArtifact(ctx, b, name, bopts...)
		} else {
			img, err = images.BuildWasmImage(ctx, b, name, bopts...)
		}
	} else {
		files, ferr := images.FilesFromDir(rootfs)
		if ferr != nil {
			return fail(ferr)
		}
		if entrypoint == "" {
			return usageErr("--rootfs needs --entrypoint")
		}
		img, err = images.BuildLinuxImage(ctx, files, ocispec.ImageConfig{Entrypoint: strings.Fields(entrypoint), Env: envs}, ocispec.Platform{}, bopts...)
	}
	if err != nil {
		return fail(err)
	}
	if output != "" {
		if strings.HasSuffix(output, ".tar") {
			err = img.WriteArchiveFile(output, tag)
		} else {
			err = img.WriteLayout(output, tag)
		}
		if err != nil {
			return fail(fmt.Errorf("write %s: %w", output, err))
		}
	}
	if push {
		timeoutOpts, err := imf.options()
		if err != nil {
			return fail(err)
		}
		opts := append([]images.Option{images.WithPlainHTTP(plainHTTP)}, timeoutOpts...)
		if dockerConfig != "" {
			opts = append(opts, images.WithDockerConfig(dockerConfig))
		}
		if err := img.Push(ctx, tag, opts...); err != nil {
			return fail(err)
		}
	}
	fmt.Fprintf(env.stdout, "%s %s\n", tag, img.Root.Digest)
	return 0
}
