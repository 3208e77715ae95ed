package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kuasar-go/kuasar/images"
)

func (c *cli) newPullCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pull [flags] REF",
		Short: "Fetch an image (registry, OCI layout or OCI archive) into the local store",
		Long: `Fetches REF into the local store and prints its name, manifest digest and kind.
REF is a registry reference (ghcr.io/org/app:tag), an OCI layout directory or
an OCI archive (.tar), optionally PATH:NAME.`,
		Example: "  kuasar pull ghcr.io/org/app:v1\n  kuasar pull app.tar:app",
		GroupID: "image",
		Args:    exactArgs(1, "one REF"),
	}
	fs := cmd.Flags()
	plainHTTP := fs.Bool("plain-http", false, "talk plain HTTP to the registry (automatic for localhost, 127.0.0.1 and [::1])")
	dockerConfig := fs.String("docker-config", "", "read registry credentials from this docker config.json (default $DOCKER_CONFIG/config.json or ~/.docker/config.json)")
	var imf imageFlags
	imf.register(fs)
	cmd.RunE = c.action(func(cmd *cobra.Command, args []string) int {
		return pull(c.ctx, c.env, args[0], *plainHTTP, *dockerConfig, &imf)
	})
	return cmd
}

// pull fetches ref into the store.
func pull(ctx context.Context, env *cliEnv, ref string, plainHTTP bool, dockerConfig string, imf *imageFlags) int {
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
	opts := append([]images.Option{images.WithPlainHTTP(plainHTTP), images.WithProgress(progressWriter(env))}, limitOpts...)
	if dockerConfig != "" {
		opts = append(opts, images.WithDockerConfig(dockerConfig))
	}
	t, err := images.ParseTarget(ref)
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
