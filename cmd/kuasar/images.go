package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"

	"golang.org/x/term"

	"github.com/kuasar-go/kuasar/images"
)

// exitImageFailure is the exit code of a failed image command (pull,
// images, image build).
const exitImageFailure = 1

func init() {
	register("images", "list the images in the local store (same as 'image ls')", runImagesList)
}

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

// parseFlags parses a subcommand's flags; it returns false (and the exit
// code) when the command should stop.
func parseFlags(fs *flag.FlagSet, env *cliEnv, args []string) (int, bool) {
	fs.SetOutput(env.stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}

func runImagesList(ctx context.Context, env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	quiet := fs.Bool("q", false, "print only the references")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: kuasar images [-q]\n\nLists the images in the local store ("+filepath.Join(env.stateDir, "images")+").")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, env, args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	s, err := openImageStore(env)
	if err != nil {
		fmt.Fprintf(env.stderr, "kuasar images: %v\n", err)
		return exitImageFailure
	}
	list, err := s.List(ctx)
	if err != nil {
		fmt.Fprintf(env.stderr, "kuasar images: %v\n", err)
		return exitImageFailure
	}
	if *quiet {
		for _, e := range list {
			fmt.Fprintln(env.stdout, e.Name)
		}
		return 0
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
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
}
