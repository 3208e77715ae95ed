package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/kuasar-go/kuasar/images"
)

// printRemoved says what an image rm or prune took out of the store, in
// docker's words.
func printRemoved(w io.Writer, r images.Removed) {
	for _, n := range r.Images {
		fmt.Fprintf(w, "Untagged: %s\n", n)
	}
	for _, d := range r.Blobs {
		fmt.Fprintf(w, "Deleted: %s\n", d)
	}
	for _, d := range r.Rootfs {
		fmt.Fprintf(w, "Deleted rootfs: %s\n", d)
	}
	fmt.Fprintf(w, "Total reclaimed space: %s\n", images.HumanSize(r.Bytes))
}

func (c *cli) newImageRemoveCommand() *cobra.Command {
	var format formatFlag
	cmd := &cobra.Command{
		Use:               "rm NAME...",
		Aliases:           []string{"remove", "rmi"},
		Short:             "Remove images from the local store and free what no other image uses",
		Long:              "Removes images from the local store (names as 'kuasar images' lists them, or references)\nand deletes the blobs and unpacked rootfs trees no other image uses, printing each.",
		Args:              minArgs(1, "missing NAME: give one or more image names (see kuasar images)"),
		ValidArgsFunction: c.completeImageNames,
		RunE: c.action(func(cmd *cobra.Command, args []string) int {
			s, err := openImageStore(c.env)
			var r images.Removed
			if err == nil {
				r, err = s.RemoveImages(c.ctx, args...)
			}
			if err != nil {
				fmt.Fprintf(c.env.stderr, "kuasar image rm: %v\n", err)
				return exitImageFailure
			}
			if format == "json" {
				return writeJSON(c.env.stdout, r)
			}
			printRemoved(c.env.stdout, r)
			return 0
		}),
	}
	format.register(cmd)
	return cmd
}

func (c *cli) newImagePruneCommand() *cobra.Command {
	var (
		all    bool
		format formatFlag
	)
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Delete blobs and rootfs trees no image uses; with --all, every image",
		Long: `Deletes the blobs and unpacked rootfs trees in the local store that no image
uses (left by an interrupted operation); with --all it removes every image
first, emptying the store.`,
		Args: cobra.NoArgs,
		RunE: c.action(func(cmd *cobra.Command, args []string) int {
			s, err := openImageStore(c.env)
			var r images.Removed
			if err == nil {
				r, err = s.Prune(c.ctx, all)
			}
			if err != nil {
				fmt.Fprintf(c.env.stderr, "kuasar image prune: %v\n", err)
				return exitImageFailure
			}
			if format == "json" {
				return writeJSON(c.env.stdout, r)
			}
			printRemoved(c.env.stdout, r)
			return 0
		}),
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "remove every image too")
	format.register(cmd)
	return cmd
}

func (c *cli) newImageInspectCommand() *cobra.Command {
	format := formatFlag("json")
	cmd := &cobra.Command{
		Use:               "inspect NAME...",
		Short:             "Show images' store entries, manifests and configs (JSON)",
		Long:              "Shows each image's store entry, manifest and config, verified against their digests,\nas a JSON array (as docker image inspect); --format text prints a summary.",
		Args:              minArgs(1, "missing NAME: give one or more image names (see kuasar images)"),
		ValidArgsFunction: c.completeImageNames,
		RunE: c.action(func(cmd *cobra.Command, args []string) int {
			s, err := openImageStore(c.env)
			if err != nil {
				fmt.Fprintf(c.env.stderr, "kuasar image inspect: %v\n", err)
				return exitImageFailure
			}
			out := []images.Inspection{}
			code := 0
			for _, n := range args {
				in, err := s.Inspect(c.ctx, n)
				if err != nil {
					fmt.Fprintf(c.env.stderr, "kuasar image inspect: %v\n", err)
					code = exitImageFailure
					continue
				}
				out = append(out, in)
			}
			if format == "json" {
				writeJSON(c.env.stdout, out)
				return code
			}
			for _, in := range out {
				fmt.Fprintf(c.env.stdout, "%s\n  digest:  %s\n  target:  %s\n  kind:    %s (%s)\n  size:    %s in %d layer(s)\n  pulled:  %s\n",
					in.Name, in.Manifest.Digest, in.Target.Digest, in.Kind, in.Shape, images.HumanSize(in.Size), len(in.ManifestContent.Layers), in.Pulled.UTC().Format(time.RFC3339))
				if in.RootfsPath != "" {
					fmt.Fprintf(c.env.stdout, "  rootfs:  %s\n", in.RootfsPath)
				}
			}
			return code
		}),
	}
	format.register(cmd)
	return cmd
}

func (c *cli) newImageTagCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "tag SOURCE TARGET",
		Short:             "Name an image in the local store also as TARGET",
		Example:           "  kuasar image tag app.tar:app localhost:5000/app:v1",
		Args:              exactArgs(2, "SOURCE and TARGET"),
		ValidArgsFunction: c.completeImageNames,
		RunE: c.action(func(cmd *cobra.Command, args []string) int {
			s, err := openImageStore(c.env)
			var e images.Entry
			if err == nil {
				e, err = s.Tag(c.ctx, args[0], args[1])
			}
			if err != nil {
				fmt.Fprintf(c.env.stderr, "kuasar image tag: %v\n", err)
				return exitImageFailure
			}
			fmt.Fprintf(c.env.stdout, "%s %s\n", e.Name, e.Manifest.Digest)
			return 0
		}),
	}
}

func (c *cli) newImagePushCommand() *cobra.Command {
	var (
		plainHTTP    bool
		dockerConfig string
		imf          imageFlags
	)
	cmd := &cobra.Command{
		Use:   "push NAME [REF]",
		Short: "Push an image from the local store to a registry (as NAME, or as REF)",
		Long: `Pushes an image of the local store to the registry its name (or REF) names:
config and layers first, then the manifest, tagged. For a multi-platform image
the store holds, and so pushes, the manifest of this platform. Prints the
reference and the manifest digest.`,
		Example:           "  kuasar image push localhost:5000/app:v1\n  kuasar image push app.tar:app ghcr.io/org/app:v1",
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: c.completeImageNames,
		RunE: c.action(func(cmd *cobra.Command, args []string) int {
			fail := func(err error) int {
				fmt.Fprintf(c.env.stderr, "kuasar image push: %v\n", err)
				return exitImageFailure
			}
			opts, err := imf.options()
			if err != nil {
				return fail(err)
			}
			opts = append(opts, images.WithPlainHTTP(plainHTTP))
			if dockerConfig != "" {
				opts = append(opts, images.WithDockerConfig(dockerConfig))
			}
			s, err := openImageStore(c.env)
			if err != nil {
				return fail(err)
			}
			ref := ""
			if len(args) == 2 {
				ref = args[1]
			}
			d, err := s.Push(c.ctx, args[0], ref, opts...)
			if err != nil {
				return fail(err)
			}
			if ref == "" {
				ref = args[0]
			}
			fmt.Fprintf(c.env.stdout, "%s %s\n", ref, d.Digest)
			return 0
		}),
	}
	fs := cmd.Flags()
	fs.BoolVar(&plainHTTP, "plain-http", false, "push over plain HTTP (automatic for localhost registries)")
	fs.StringVar(&dockerConfig, "docker-config", "", "registry credentials file (default $DOCKER_CONFIG/config.json or ~/.docker/config.json)")
	imf.registerTimeouts(fs)
	return cmd
}
