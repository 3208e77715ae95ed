// Command kuasar-sandboxer is kuasar-go's containerd sandboxer daemon. It
// serves containerd's Sandbox API (containerd.services.sandbox.v1.Controller)
// over gRPC on a unix socket, and one Task API socket per sandbox. containerd
// reaches it through a [proxy_plugins.kuasar] entry of type "sandbox"; see
// docs/sandboxer.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"google.golang.org/grpc"

	kbackends "github.com/kuasar-go/kuasar/cmd/internal/backends"
	"github.com/kuasar-go/kuasar/internal/fsroot"
	"github.com/kuasar-go/kuasar/internal/unixsock"
	"github.com/kuasar-go/kuasar/internal/version"
	"github.com/kuasar-go/kuasar/sandboxer"
	"github.com/kuasar-go/kuasar/sandboxer/config"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kuasar-sandboxer:", err)
		os.Exit(1)
	}
}

// loadConfig reads the configuration: the embedded defaults, the file at
// path over them (it must exist when --config was given), then the
// override flags given on fs's command line over both; the result is
// checked whole.
func loadConfig(fs *flag.FlagSet, path string, o *kbackends.Overrides) (*kbackends.Config, error) {
	explicit := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "config" {
			explicit = true
		}
	})
	cfg, err := kbackends.Load(path, explicit)
	if err != nil {
		return nil, err
	}
	o.Apply(cfg)
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func run(args []string) error {
	fs := flag.NewFlagSet("kuasar-sandboxer", flag.ContinueOnError)
	cfgPath := fs.String("config", config.DefaultPath, "configuration file (TOML); the embedded defaults are used when the default path is absent")
	overrides := kbackends.RegisterOverrides(fs)
	debugListen := fs.String("debug-listen", "", "unix socket serving /debug/pprof (goroutines, heap, CPU profile, trace) for diagnosis; off when empty")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Println("kuasar-sandboxer", version.Version, version.Revision)
		return nil
	}
	cfg, err := loadConfig(fs, *cfgPath, overrides)
	if err != nil {
		return err
	}
	// Guest paths are resolved with openat2(2); without it there is no
	// safe mode to fall back to.
	if err := fsroot.Check(); err != nil {
		return err
	}
	if err := log.SetLevel(cfg.Sandboxer.LogLevel); err != nil {
		return fmt.Errorf("log level %q: %w", cfg.Sandboxer.LogLevel, err)
	}
	if err := log.SetFormat(log.TextFormat); err != nil {
		return err
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()

	resolver := sandboxer.NewContainerdImages(cfg.Sandboxer.ContainerdAddress)
	defer resolver.Close()
	opts := []sandboxer.Option{sandboxer.WithConfig(cfg.Config), sandboxer.WithImageResolver(resolver), sandboxer.WithSandboxStore(resolver)}
	bopts, closeBackends, err := backends(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeBackends()
	opts = append(opts, bopts...)
	svc, err := sandboxer.New(ctx, opts...)
	if err != nil {
		return err
	}

	mode, _ := cfg.SocketFileMode()
	l, err := listenUnix(cfg.Sandboxer.Listen, mode)
	if err != nil {
		return err
	}
	defer os.Remove(cfg.Sandboxer.Listen)
	gs := grpc.NewServer(append(sandboxer.ServerOptions(), grpc.ChainUnaryInterceptor(recoverPanics))...)
	svc.Register(gs)

	if *debugListen != "" {
		dl, err := listenUnix(*debugListen, 0o600)
		if err != nil {
			return err
		}
		defer os.Remove(*debugListen)
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(dl)
		defer hs.Close()
	}

	// Every persisted sandbox is registered before serving, so that no RPC
	// is told a live sandbox does not exist; re-attaching them runs in the
	// background: RPCs on a sandbox wait only for its own recovery, and new
	// sandboxes are served at once.
	start := time.Now()
	waitRecovered, err := svc.LoadRecords(ctx)
	if err != nil {
		return err
	}
	go func() {
		waitRecovered()
		log.G(ctx).WithField("sandboxes", svc.Len()).WithField("took", time.Since(start)).Info("recovery done")
	}()

	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(l) }()
	log.G(ctx).WithField("listen", cfg.Sandboxer.Listen).WithField("state_dir", svc.StateDir()).
		WithField("version", version.Version+" "+version.Revision).Info("kuasar-sandboxer serving")
	for _, st := range cfg.Settings() {
		log.G(ctx).WithField("key", st.Key).WithField("value", st.Value).WithField("source", st.Source).Info("effective setting")
	}

	select {
	case <-ctx.Done():
		log.G(ctx).Info("shutting down")
	case err := <-errc:
		return err
	}
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		gs.Stop()
	}
	svc.Close()
	return nil
}

// listenUnix listens on path with the given file mode, making its directory
// and replacing a stale socket left by a previous run.
func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, err
	}
	return unixsock.Listen(path, mode)
}

// recoverPanics turns a panic in a Sandbox API call into an Internal error,
// so that one faulty call does not end every sandbox this process hosts.
func recoverPanics(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			log.G(ctx).WithField("method", info.FullMethod).WithField("panic", r).Errorf("sandbox API panicked\n%s", debug.Stack())
			err = errgrpc.ToGRPC(fmt.Errorf("%s: internal error (panic: %v): %w", info.FullMethod, r, errdefs.ErrInternal))
		}
	}()
	return h(ctx, req)
}
