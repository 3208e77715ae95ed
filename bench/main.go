// Command bench is kuasar-go's benchmark harness: it runs the project's Go
// benchmarks (the figures the issues and the README quote) several times,
// summarises each metric as a median with its confidence interval, records the
// machine they ran on, and writes the result as Markdown and raw benchstat
// input, so that numbers can be compared across commits with benchstat.
//
// Usage:
//
//	go run ./bench [-out DIR] [-count N] [-suite REGEXP] [-benchtime D]
//	go run ./bench -summarize bench/results/STAMP.txt
//
// The harness runs nothing but `go test -bench`: every figure it prints comes
// from a benchmark that anyone can run by hand with the command it logs.
//
// Interrupting it (^C, SIGTERM) stops the running suite and kills every
// process the suites started, daemonised QEMU and containerd included, and
// removes their temporary files and, as root, their mounts (see reap.go).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// suite is one group of benchmarks the harness runs.
type suite struct {
	// name identifies the suite in the report and for -suite.
	name string
	// pkg is the Go package holding the benchmarks.
	pkg string
	// bench is the -bench regular expression.
	bench string
	// benchtime overrides the default -benchtime (slow end-to-end benchmarks
	// use a fixed iteration count such as "20x").
	benchtime string
	// what says in a sentence what the figures mean, for the report.
	what string
}

// suites lists every benchmark the project quotes. Keep it in step with the
// README's "Performance" section.
var suites = []suite{
	{name: "wasm-engine", pkg: "./wasm/wazero", bench: ".", what: "wazero engine: instantiate+run with the compiled module reused, cold compile, fresh process warm vs cold cache"},
	{name: "cli", pkg: "./cmd/kuasar", bench: ".", benchtime: "20x", what: "a fresh `kuasar run` process, warm and cold compilation cache"},
	{name: "task", pkg: "./task/...", bench: ".", what: "in-process Wasm Task API over ttrpc"},
	{name: "sandboxer", pkg: "./sandboxer/...", bench: ".", benchtime: "20x", what: "sandbox+task lifecycle over the sandboxer's own sockets, through CRI beside runc, memory per idle sandbox"},
	{name: "vm", pkg: "./vm/...", bench: ".", benchtime: "3x", what: "micro-VM create to container running, broken down, beside a bare QEMU boot"},
}

func main() {
	out := flag.String("out", "bench/results", "directory to write the report into")
	count := flag.Int("count", 6, "how many times each benchmark runs (the median is reported; 6 or more give a 95% confidence interval)")
	filter := flag.String("suite", ".", "regular expression selecting suites by name")
	benchtime := flag.String("benchtime", "", "override -benchtime for every suite")
	from := flag.String("summarize", "", "print the summary table of an earlier run's raw output file instead of running")
	flag.Parse()
	if *from != "" {
		if err := summarizeFile(*from, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}

	// SIGINT or SIGTERM stops the running suite and kills everything it
	// started (see reap.go); becoming a subreaper first is what lets the
	// harness find the processes that left the suite's process group.
	if err := becomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: warning:", err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, *out, *count, *filter, *benchtime, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, outDir string, count int, filter, benchtime string, log io.Writer) error {
	re, err := regexp.Compile(filter)
	if err != nil {
		return fmt.Errorf("-suite %q is not a regular expression: %w", filter, err)
	}
	if count < 1 {
		return fmt.Errorf("-count must be at least 1, got %d", count)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("20060102T150405Z")
	rawPath := filepath.Join(outDir, stamp+".txt")
	raw, err := os.Create(rawPath)
	if err != nil {
		return err
	}
	defer raw.Close()

	// Every suite's temporary files go under one directory the harness
	// removes at the end, interrupted or not, once nothing runs any more.
	scratch, err := os.MkdirTemp("", "kuasar-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if _, err := killDescendants(reapTimeout); err != nil {
			fmt.Fprintln(log, "bench:", err)
		}
		os.RemoveAll(scratch)
	}()

	var report bytes.Buffer
	fmt.Fprintf(&report, "# kuasar-go benchmarks, %s\n\n", time.Now().UTC().Format(time.RFC3339))
	writeMachine(&report)

	ran := 0
	for _, s := range suites {
		if !re.MatchString(s.name) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		ran++
		bt := s.benchtime
		if benchtime != "" {
			bt = benchtime
		}
		args := []string{"test", "-run", "^$", "-bench", s.bench, "-benchmem", "-count", fmt.Sprint(count), "-timeout", "60m"}
		if bt != "" {
			args = append(args, "-benchtime", bt)
		}
		args = append(args, s.pkg)
		fmt.Fprintf(log, "bench: %s: go %s\n", s.name, strings.Join(args, " "))
		cmd := suiteCommand(ctx, args, scratch)
		var buf bytes.Buffer
		cmd.Stdout = io.MultiWriter(&buf, raw)
		cmd.Stderr = log
		runErr := cmd.Run()
		if n, err := killDescendants(reapTimeout); err != nil {
			fmt.Fprintf(log, "bench: %s: %v\n", s.name, err)
		} else if n > 0 {
			fmt.Fprintf(log, "bench: %s left %d processes running; killed them\n", s.name, n)
		}

		fmt.Fprintf(&report, "## %s\n\n%s\n\n`go %s`\n\n", s.name, s.what, strings.Join(args, " "))
		rows, perr := summarize(&buf)
		if perr != nil {
			return fmt.Errorf("suite %s: reading benchmark output: %w", s.name, perr)
		}
		writeTable(&report, rows)
		if runErr != nil {
			fmt.Fprintf(&report, "\n**The suite failed: %v.** Figures above are from the benchmarks that completed.\n\n", runErr)
			fmt.Fprintf(log, "bench: %s failed: %v\n", s.name, runErr)
		}
	}
	if ran == 0 {
		return fmt.Errorf("-suite %q matches no suite; suites are: %s", filter, suiteNames())
	}
	if ctx.Err() != nil {
		fmt.Fprintf(&report, "\n**Interrupted**: the report stops at the suite that was running.\n")
	}
	mdPath := filepath.Join(outDir, stamp+".md")
	if err := os.WriteFile(mdPath, report.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(log, "bench: report %s, raw output for benchstat %s\n", mdPath, rawPath)
	if _, err := log.Write(report.Bytes()); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted; every process the suites started was killed")
	}
	return nil
}

// reapTimeout bounds how long the harness waits for the processes it kills to
// be gone.
const reapTimeout = 30 * time.Second

// suiteCommand returns the `go` command that runs one suite, contained so
// that the harness can stop all of it: in its own process group, which gets
// SIGINT when ctx is done (as a terminal's ^C would), then SIGKILL if it has
// not exited 10 s later; with TMPDIR under scratch; and, as root, in a private
// mount namespace, so that no mount a benchmark makes outlives the suite even
// when the benchmark is killed before it can unmount.
func suiteCommand(ctx context.Context, args []string, scratch string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr.Unshareflags = syscall.CLONE_NEWNS // Go makes "/" private (MS_REC) in the child
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Env = append(os.Environ(), "TMPDIR="+scratch)
	return cmd
}

// summarizeFile prints the table of a raw output file written by an earlier
// run, so a report can be re-rendered without re-running the benchmarks.
func summarizeFile(path string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rows, err := summarize(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	writeTable(w, rows)
	return nil
}

func suiteNames() string {
	names := make([]string, len(suites))
	for i, s := range suites {
		names[i] = s.name
	}
	return strings.Join(names, ", ")
}

// writeMachine records what the figures were measured on: they mean nothing
// without it.
func writeMachine(w io.Writer) {
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				if _, v, ok := strings.Cut(line, ":"); ok {
					model = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	kernel := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	fmt.Fprintf(w, "Machine: %d CPUs (%s), kernel %s, %s %s/%s.\n\n", runtime.NumCPU(), model, kernel, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
