// Command kuasar runs WebAssembly and Linux OCI workloads in the sandbox they
// ask for, without a daemon, and manages the local image store.
//
// Usage:
//
//	kuasar run [flags] TARGET [-- ARGS...]
//	kuasar image build --wasm FILE [--artifact] --tag REF (--push | --output PATH)
//	kuasar image ls|rm|inspect|tag|push|prune
//	kuasar pull REF
//	kuasar images [--format json]
//	kuasar check [--format json]
//	kuasar version [--format json]
//	kuasar completion bash|zsh|fish
//
// The command tree is built with github.com/spf13/cobra (see RATIONALE.md):
// GNU-style --long flags with docker's short aliases, help on stdout, and
// shell completion. Commands added with register keep their own argument
// parsing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/containerd/log"
	"github.com/spf13/cobra"
)

// command is a subcommand added with register: it parses its own flags from
// args and returns the process exit code.
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

// processSignals, set by main, carries the SIGINT and SIGTERM the process
// received, from its start; nil when the CLI runs inside a test.
var processSignals <-chan os.Signal

// commands are the subcommands added with register, by name.
var commands = map[string]command{}

// register adds a subcommand that parses its own arguments: kuasar passes
// everything after its name untouched (-h and --help included) and exits
// with the code run returns. It is the bridge for commands not yet written
// as cobra commands; a name that is also a built-in command is ignored.
func register(name, summary string, run func(ctx context.Context, env *cliEnv, args []string) int) {
	commands[name] = command{summary: summary, run: run}
}

// Exit codes of usage errors: `kuasar run` follows docker run (125 for
// kuasar's own failures), the other commands the shell convention (2).
const exitUsage = 2

// annotationUsageExit names the exit code a command returns for a usage
// error, when it is not exitUsage.
const annotationUsageExit = "kuasar.io/usage-exit"

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
	if level == "debug" || level == "trace" {
		// Nanosecond timestamps: the debug log is how a run's phases are
		// timed (docs/performance.md).
		_ = log.SetFormat(log.TextFormat)
	}
	// SIGINT and SIGTERM cancel ctx (stopping a pull or a compilation) and
	// are kept for runInSandbox, which passes them on to the container
	// even when they came before it started.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	caught := make(chan os.Signal, 4)
	signal.Notify(caught, os.Interrupt, syscall.SIGTERM)
	forward := make(chan os.Signal, 4)
	processSignals = forward
	go func() {
		for s := range caught {
			cancel()
			select {
			case forward <- s:
			default: // runInSandbox has enough to act on
			}
		}
	}()
	env := &cliEnv{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, stateDir: defaultStateDir()}
	os.Exit(runCLI(ctx, env, os.Args[1:]))
}

// cli holds one invocation's state: the streams and the exit code the
// command that ran set.
type cli struct {
	ctx  context.Context
	env  *cliEnv
	code int
}

// action adapts a command body that returns an exit code to cobra.
func (c *cli) action(f func(cmd *cobra.Command, args []string) int) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c.code = f(cmd, args)
		return nil
	}
}

// runCLI runs `kuasar args...` and returns the exit code. The command tree
// is built anew for every call, so flags never carry over between calls
// (tests run many in one process).
func runCLI(ctx context.Context, env *cliEnv, args []string) int {
	c := &cli{ctx: ctx, env: env}
	root := c.newRoot(args)
	if args == nil {
		args = []string{} // cobra reads os.Args for nil
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return c.code
	}
	if cmd == nil {
		cmd = root
	}
	name := cmd.CommandPath()
	fmt.Fprintf(env.stderr, "%s: %s\n", name, explainFlagError(cmd, args, err))
	fmt.Fprintf(env.stderr, "Run '%s --help' for usage.\n", name)
	if s, ok := cmd.Annotations[annotationUsageExit]; ok {
		var code int
		fmt.Sscan(s, &code)
		return code
	}
	return exitUsage
}

// explainFlagError adds the fix to a flag error caused by a long flag
// written with one dash (-memory, as Go's flag package took it), which
// pflag reads as short flags (-m emory): say --memory.
func explainFlagError(cmd *cobra.Command, args []string, err error) string {
	msg := err.Error()
	for _, a := range args {
		if a == "--" {
			break
		}
		if len(a) < 3 || a[0] != '-' || a[1] == '-' {
			continue
		}
		name, _, _ := strings.Cut(a[1:], "=")
		if len(name) > 1 && cmd.Flags().Lookup(name) != nil {
			return fmt.Sprintf("%s (long flags take two dashes: write -%s)", msg, a)
		}
	}
	return msg
}

// builtin is a command written for cobra, by name.
type builtin struct {
	name  string
	build func() *cobra.Command
}

// newRoot builds the command tree for args.
func (c *cli) newRoot(args []string) *cobra.Command {
	root := &cobra.Command{
		Use:   "kuasar",
		Short: "Run WebAssembly and Linux OCI workloads in the sandbox they ask for",
		Long: `kuasar runs WebAssembly modules and OCI images in the sandbox they ask for
(in-process Wasm, a micro-VM or Quark) without a daemon, and manages the local
image store. kuasar-sandboxer serves the same sandboxes to containerd.`,
		Example: `  kuasar run hello.wasm
  kuasar run --dir . -e GREETING=hi app.wasm -- ls .
  kuasar run ghcr.io/org/app:v1
  kuasar check`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
	}
	showVersion := root.Flags().BoolP("version", "v", false, "print kuasar's version and its engines' (as 'kuasar version')")
	root.RunE = c.action(func(cmd *cobra.Command, args []string) int {
		if *showVersion {
			return printVersion(c.env.stdout, "text")
		}
		cmd.Help()
		return 0
	})
	root.SetIn(c.env.stdin)
	root.SetOut(c.env.stdout)
	root.SetErr(c.env.stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return err })
	root.AddGroup(&cobra.Group{ID: "run", Title: "Run workloads:"}, &cobra.Group{ID: "image", Title: "Images:"}, &cobra.Group{ID: "host", Title: "This host and kuasar:"})

	builtins := []builtin{
		{"run", c.newRunCommand},
		{"pull", c.newPullCommand},
		{"images", c.newImagesCommand},
		{"image", c.newImageCommand},
		{"check", c.newCheckCommand},
		{"version", c.newVersionCommand},
		{"vm-templates", c.newTemplatesCommand},
	}
	// A command line naming a command builds only that command: a fresh
	// `kuasar run` pays for its own flags, not for the whole tree's. Help,
	// completion and anything else get the whole tree.
	only := ""
	if len(args) > 0 {
		only = args[0]
	}
	known := slices.ContainsFunc(builtins, func(b builtin) bool { return b.name == only })
	if _, bridged := commands[only]; !known && !bridged {
		only = ""
	}
	// cobra adds `completion` (four commands) to a tree with subcommands.
	root.CompletionOptions.DisableDefaultCmd = only != ""
	for _, b := range builtins {
		if only == "" || b.name == only {
			root.AddCommand(b.build())
		}
	}
	for _, name := range sortedCommandNames() {
		if only != "" && name != only {
			continue
		}
		if slices.ContainsFunc(builtins, func(b builtin) bool { return b.name == name }) {
			continue // a built-in command of that name wins
		}
		root.AddCommand(c.bridge(name, commands[name]))
	}
	return root
}

// bridge makes a command added with register into a cobra command whose
// arguments pass through untouched.
func (c *cli) bridge(name string, b command) *cobra.Command {
	return &cobra.Command{
		Use:                name + " [ARGS...]",
		Short:              b.summary,
		GroupID:            "run",
		DisableFlagParsing: true,
		RunE: c.action(func(cmd *cobra.Command, args []string) int {
			return b.run(c.ctx, c.env, args)
		}),
	}
}

// sortedCommandNames lists the names added with register, sorted.
func sortedCommandNames() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// exactArgs accepts exactly n arguments, naming what they are when the
// count is wrong.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("want %s, got %d argument(s)", what, len(args))
		}
		return nil
	}
}

// minArgs accepts n or more arguments, else fails with msg.
func minArgs(n int, msg string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return errors.New(msg)
		}
		return nil
	}
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

// parseFlags parses the flags of a command added with register that uses
// Go's flag package; it returns false (and the exit code) when the command
// should stop. Help (-h) goes to stdout, flag errors to stderr.
func parseFlags(fs *flag.FlagSet, env *cliEnv, args []string) (int, bool) {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(env.stdout)
		fs.Usage()
		return 0, false
	case err != nil:
		fmt.Fprintf(env.stderr, "kuasar %s: %v\n", fs.Name(), err)
		fs.SetOutput(env.stderr)
		fs.Usage()
		return exitUsage, false
	}
	return 0, true
}
