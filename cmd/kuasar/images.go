package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kuasar-go/kuasar/images"
)

// exitImageFailure is the exit code of a failed image command (pull,
// images, image build).
const exitImageFailure = 1

// openImageStore opens the image store of the CLI's state directory.
func openImageStore(env *cliEnv) (*images.Store, error) {
	return images.OpenStore(filepath.Join(env.stateDir, "images"))
}

// progressWriter returns env.stderr when stdout is a terminal (so piped or
// scripted runs get no progress noise), else nil.
func progressWriter(env *cliEnv) io.Writer {
	if f, ok := env.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return env.stderr
	}
	return nil
}

// imageSummary is one image in `kuasar images --format json`.
type imageSummary struct {
	// Name is the image's name in the store.
	Name string `json:"name"`
	// Digest is the manifest's digest (the platform's, for an index).
	Digest string `json:"digest"`
	// Target is the digest the name resolved to when pulled (an index or
	// the manifest itself).
	Target string `json:"target"`
	// Kind is wasm or linux.
	Kind images.Kind `json:"kind"`
	// Shape is the image's layout (wasi/wasm image, Wasm artifact, ...).
	Shape images.Shape `json:"shape"`
	// Size is the bytes of manifest, config and layers.
	Size int64 `json:"size"`
	// Pulled is when the image was stored.
	Pulled time.Time `json:"pulled"`
}

func (c *cli) newImagesCommand() *cobra.Command {
	cmd := c.imageListCommand("images", nil)
	cmd.Short = "List the images in the local store (as 'image ls')"
	cmd.GroupID = "image"
	return cmd
}

// imageListCommand builds `kuasar images` and `kuasar image ls`.
func (c *cli) imageListCommand(use string, aliases []string) *cobra.Command {
	var (
		quiet  bool
		format formatFlag
	)
	cmd := &cobra.Command{
		Use:     use,
		Aliases: aliases,
		Short:   "List the images in the local store",
		Long:    "Lists the images in the local store ($KUASAR_STATE_DIR/images, here " + filepath.Join(c.env.stateDir, "images") + ").",
		Args:    cobra.NoArgs,
		RunE: c.action(func(cmd *cobra.Command, args []string) int {
			fail := func(err error) int {
				fmt.Fprintf(c.env.stderr, "%s: %v\n", cmd.CommandPath(), err)
				return exitImageFailure
			}
			s, err := openImageStore(c.env)
			if err != nil {
				return fail(err)
			}
			list, err := s.List(c.ctx)
			if err != nil {
				return fail(err)
			}
			switch {
			case format == "json":
				out := make([]imageSummary, 0, len(list))
				for _, e := range list {
					out = append(out, imageSummary{Name: e.Name, Digest: e.Manifest.Digest.String(), Target: e.Target.Digest.String(),
						Kind: e.Kind, Shape: e.Shape, Size: e.Size, Pulled: e.Pulled})
				}
				return writeJSON(c.env.stdout, out)
			case quiet:
				for _, e := range list {
					fmt.Fprintln(c.env.stdout, e.Name)
				}
				return 0
			}
			tw := tabwriter.NewWriter(c.env.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REF\tDIGEST\tKIND\tSIZE")
			for _, e := range list {
				d := e.Manifest.Digest.String()
				if len(d) > 19 {
					d = d[:19]
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Name, d, e.Kind, images.HumanSize(e.Size))
			}
			tw.Flush()
			return 0
		}),
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the names")
	format.register(cmd)
	return cmd
}

// completeImageNames completes the names of the images in the store.
func (c *cli) completeImageNames(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	s, err := openImageStore(c.env)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	list, err := s.List(c.ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, e := range list {
		names = append(names, e.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
