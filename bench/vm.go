package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/bench/internal/gotest"
)

// modulePath is this repository's Go module, which the scenarios that run
// existing `go test` benchmarks need the source of.
const modulePath = "github.com/kuasar-go/kuasar"

// sourceRoot finds the repository's root above the working directory.
func sourceRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(b), []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("this scenario runs the VM benchmarks of kuasar's source tree with go test: run kuasar bench from a clone of the repository: %w", errdefs.ErrNotFound)
		}
		dir = parent
	}
}

// testBinary compiles pkg's tests (go test -c) into the harness's state
// directory and returns the binary and the package's directory.
func (r *runner) testBinary(ctx context.Context, pkg string) (bin, dir string, err error) {
	root, err := sourceRoot()
	if err != nil {
		return "", "", err
	}
	out := filepath.Join(r.benchDir, "testbin", strings.ReplaceAll(strings.Trim(pkg, "./"), "/", "_")+".test")
	r.progress.status("go test -c %s (cached after the first run)", pkg)
	cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", out, pkg)
	cmd.Dir = root
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go test -c %s: %w: %s", pkg, err, b)
	}
	return out, filepath.Join(root, pkg), nil
}

// benchOnce runs one benchmark of a compiled test binary once
// (-test.benchtime 1x) and returns its metrics.
func benchOnce(ctx context.Context, bin, dir, name string) (map[string]float64, error) {
	cmd := exec.CommandContext(ctx, bin, "-test.run", "^$", "-test.bench", "^"+name+"$", "-test.benchtime", "1x", "-test.timeout", "10m")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()
	ms, err := gotest.Parse(bytes.NewReader(out.Bytes()))
	if runErr != nil || err != nil || len(ms) == 0 {
		return nil, fmt.Errorf("%s: %v %v: %s", name, runErr, err, tailString(out.String(), 3000))
	}
	m := map[string]float64{}
	for _, x := range ms {
		key := strings.TrimPrefix(x.Name, strings.TrimPrefix(name, "Benchmark"))
		m[strings.TrimPrefix(key+" "+x.Unit, "/")] = x.Values[0]
	}
	return m, nil
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func vmStart(ctx context.Context, r *runner) error {
	n := r.runs(6, 3)
	bin, dir, err := r.testBinary(ctx, "./vm/vmbackend")
	if err != nil {
		return err
	}
	goTest := func(name string) string {
		return fmt.Sprintf("go test -run '^$' -bench '^%s$' -benchtime 1x ./vm/vmbackend", name)
	}
	total := r.series("kuasar create to running", "s", "VM sandbox create to container running through the VM backend (QEMU): "+goTest("BenchmarkSandboxStart"), false)
	ready := r.series("kuasar agent ready", "s", "create to the guest agent's first answer (VMM + kernel boot + agent start)", false)
	parts := []struct {
		s      *Series
		metric string
	}{
		{r.series("VMM up", "s", "QEMU started, QMP answering", false), " vmm-start-ms"},
		{r.series("kernel + agent", "s", "kernel boot and agent start", false), " kernel+agent-boot-ms"},
		{r.series("sandbox set-up", "s", "hostname, shared directory mount", false), " setup-ms"},
		{r.series("container start", "s", "container Create + Start in the guest", false), " ready-to-container-started-ms"},
	}
	for _, p := range parts {
		p.s.noRatio = true
	}
	total.noRatio = true
	bare := r.series("bare QEMU", "s", "the same kernel, initramfs and QEMU command line started by hand, to the agent's first answer: "+goTest("BenchmarkBareQEMU"), true)
	ready.vs = []string{bare.Name}
	arms := []arm{
		{s: total, once: func(ctx context.Context, i int) (float64, error) {
			m, err := benchOnce(ctx, bin, dir, "BenchmarkSandboxStart")
			if err != nil {
				return 0, err
			}
			if i >= 0 {
				ready.add(m[" agent-ready-ms"] / 1000)
				for _, p := range parts {
					p.s.add(m[p.metric] / 1000)
				}
			}
			return m[" create-to-running-ms"] / 1000, nil
		}},
		{s: bare, once: func(ctx context.Context, _ int) (float64, error) {
			m, err := benchOnce(ctx, bin, dir, "BenchmarkBareQEMU")
			if err != nil {
				return 0, err
			}
			return m[" agent-ready-ms"] / 1000, nil
		}},
	}
	// From a VM template (a restored snapshot), beside QEMU restoring the
	// same template by hand; both measured by one benchmark run, in turn.
	// Skipped, with why, where templates cannot be built.
	if m, err := benchOnce(ctx, bin, dir, "BenchmarkTemplateOverhead"); err != nil {
		r.skip("from a template: %v", err)
	} else if _, ok := m[" sandbox-agent-ready-ms"]; !ok {
		r.skip("from a template: BenchmarkTemplateOverhead reported no sandbox-agent-ready-ms (%v)", m)
	} else {
		tpl := r.series("kuasar from template, agent ready", "s", "VM sandbox from a template (snapshot restore) to the agent's first answer: "+goTest("BenchmarkTemplateOverhead"), false)
		restore := r.series("bare QEMU restore", "s", "QEMU restoring the same template by hand to the agent's first answer (same benchmark run)", true)
		tpl.vs = []string{restore.Name}
		arms = append(arms, arm{s: tpl, warmed: true, once: func(ctx context.Context, i int) (float64, error) {
			m, err := benchOnce(ctx, bin, dir, "BenchmarkTemplateOverhead")
			if err != nil {
				return 0, err
			}
			restore.add(m[" bare-restore-agent-ready-ms"] / 1000)
			return m[" sandbox-agent-ready-ms"] / 1000, nil
		}})
	}
	return r.interleave(ctx, n, arms)
}
