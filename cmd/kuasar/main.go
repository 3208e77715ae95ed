// Command kuasar runs WebAssembly and Linux OCI workloads in the sandbox they
// ask for, without a daemon, and manages the local image store.
//
// Usage:
//
//	kuasar run [flags] TARGET [-- ARGS...]
//	kuasar image build --wasm FILE [--artifact] --tag REF (--push | --output PATH)
//	kuasar pull REF
//	kuasar images
//	kuasar version
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/containerd/log"
)

// command is one subcommand: it parses its own flags from args and returns
// the process exit code.
type command struct {
	summary string
	run     func(ctx context.Context, env *cliEnv, args []string) int
}

// cliEnv is what every subcommand needs from the process, kept in one place so
// tests can run commands in-process with their own streams.
type cliEnv struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// stateDir holds the image store and the compilation cache.
	stateDir string
}

var commands = map[string]command{}

func register(name, summary string, run func(ctx context.Context, env *cliEnv, args []string) int) {
	commands[name] = command{summary: summary, run: run}
}

func main() {
	// The CLI speaks through its output and exit code; library logs are for
	// debugging, so only warnings show unless KUASAR_LOG_LEVEL asks for more.
	level := os.Getenv("KUASAR_LOG_LEVEL")
	if level == "" {
		level = "warn"
	}
	if err := log.SetLevel(level); err != nil {
		fmt.Fprintf(os.Stderr, "kuasar: KUASAR_LOG_LEVEL=%q: use trace, debug, info, warn or error\n", level)
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	env := &cliEnv{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, stateDir: defaultStateDir()}
	os.Exit(runCLI(ctx, env, os.Args[1:]))
}

// runCLI dispatches args to a subcommand and returns the exit code.
func runCLI(ctx context.Context, env *cliEnv, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(env.stderr, "kuasar: unknown command %q\n", args[0])
		usage(env.stderr)
		return 2
	}
	return cmd.run(ctx, env, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: kuasar COMMAND [flags] [args]")
	fmt.Fprintln(w, "\ncommands:")
	for _, name := range sortedCommandNames() {
		fmt.Fprintf(w, "  %-8s %s\n", name, commands[name].summary)
	}
	fmt.Fprintln(w, "\nRun 'kuasar COMMAND -h' for a command's flags.")
}

// defaultStateDir is $KUASAR_STATE_DIR, else /var/lib/kuasar as root, else
// $XDG_CACHE_HOME/kuasar (~/.cache/kuasar).
func defaultStateDir() string {
	if d := os.Getenv("KUASAR_STATE_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/kuasar"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return d + "/kuasar"
	}
	return os.TempDir() + "/kuasar"
}
