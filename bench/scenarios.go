package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kuasar-go/kuasar/bench/internal/rig"
	"github.com/kuasar-go/kuasar/bench/internal/stats"
	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/procfs"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

func init() {
	registry = append(registry,
		scenario{name: "wasm-start", quick: true, run: wasmStart,
			summary: "Wasm sandbox + task start to exit over the sandboxer's API, beside `runc run` of busybox echo and a fresh wazero process per task"},
		scenario{name: "cri", quick: true, run: criScenario,
			summary: "a pod with one short container through containerd's CRI gRPC API (as kubelet calls it): kuasar Wasm hello beside the runc handler's busybox echo"},
		scenario{name: "crictl", quick: true, run: crictlScenario,
			summary: "the same pod through crictl (runp, create, start, exited), kuasar beside runc"},
		scenario{name: "throughput", quick: true, run: throughput,
			summary: "N Wasm tasks at concurrency C (1 to 128), one sandbox per worker: task start-to-exit latency and tasks per second"},
		scenario{name: "density", quick: true, run: density,
			summary: "N idle Wasm sandboxes (a module asleep) in one sandboxer: RSS, goroutines and fds per sandbox, beside an idle wazero process"},
		scenario{name: "compile", quick: true, run: compileCache,
			summary: "compilation cache: cold compile, disk-cache compile, warm in-process run, fresh `kuasar run` process (warm and cold cache), beside a fresh wazero process"},
		scenario{name: "vm-start", run: vmStart,
			summary: "VM sandbox create to container running (QEMU) with its breakdown, beside a bare QEMU boot of the same kernel and initramfs (go test -bench of vm/vmbackend)"},
	)
}

// cleanup runs f when the scenario ends.
func (r *runner) cleanup(f func()) { r.closers = append(r.closers, f) }

// id returns a new sandbox or container name, unique in the run.
func (r *runner) id(prefix string) string {
	return fmt.Sprintf("%s%d", prefix, r.seq.Add(1))
}

// sandboxer starts a kuasar-sandboxer for this scenario.
func (r *runner) sandboxer(ctx context.Context, o rig.SandboxerOptions) (*rig.Sandboxer, error) {
	bin, err := rig.Binary(r.o.Binary, "kuasar-sandboxer")
	if err != nil {
		return nil, err
	}
	r.progress.status("starting kuasar-sandboxer")
	sb, err := rig.StartSandboxer(ctx, bin, filepath.Join(r.dir, "sandboxer"), o)
	if err != nil {
		return nil, err
	}
	r.cleanup(sb.Close)
	return sb, nil
}

// wazeroArm is the fresh-process-per-task baseline: wazero's CLI run as a
// new process for each sample, its compilation cache warm (kept under the
// harness's state directory), as a shim-per-container runtime would.
func (r *runner) wazeroArm(module string, args ...string) (arm, bool) {
	bin, err := rig.Tool("wazero")
	if err != nil {
		r.skip("wazero-process: %v", err)
		return arm{}, false
	}
	path := filepath.Join(r.dir, module+".wasm")
	if _, err := os.Stat(path); err != nil {
		if _, err := fixtures.WriteFile(r.dir, module); err != nil {
			r.skip("wazero-process: %v", err)
			return arm{}, false
		}
	}
	cache := filepath.Join(r.benchDir, "wazero-cache")
	s := r.series("wazero-process", "s", "a fresh `wazero run` process per task (wazero "+rig.WazeroVersion+" CLI, warm compilation cache)", true)
	return arm{s: s, once: timed(func(ctx context.Context, _ int) error {
		cmd := exec.CommandContext(ctx, bin, append([]string{"run", "-cachedir", cache, path}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("wazero run: %w: %s", err, out)
		}
		if !bytes.Contains(out, []byte("hello from wasm")) {
			return fmt.Errorf("wazero run printed %q", out)
		}
		return nil
	})}, true
}

func wasmStart(ctx context.Context, r *runner) error {
	n := r.runs(100, 20)
	sb, err := r.sandboxer(ctx, rig.SandboxerOptions{})
	if err != nil {
		return err
	}
	req, err := sb.Bundle("hello", "hello", []string{"/hello.wasm"}, "")
	if err != nil {
		return err
	}
	kuasar := r.series("kuasar", "s", "sandbox Create+Start, task Create+Start, Wait (exit), Delete, sandbox Stop+Shutdown of hello.wasm over the sandboxer's gRPC Sandbox API and ttrpc Task API", false)
	arms := []arm{{s: kuasar, once: timed(func(ctx context.Context, _ int) error { return sb.RunOnce(ctx, r.id("ws"), req) })}}
	if rc, err := rig.NewRunc(ctx, filepath.Join(r.dir, "runc")); err != nil {
		r.skip("runc-run: %v", err)
	} else {
		s := r.series("runc-run", "s", "`runc run` of busybox echo hello to its exit (container created, started, deleted)", true)
		arms = append(arms, arm{s: s, once: timed(func(ctx context.Context, _ int) error { return rc.Run(ctx, r.id("rr")) })})
		r.target("kuasar", "runc-run", 30)
	}
	if a, ok := r.wazeroArm("hello"); ok {
		arms = append(arms, a)
		r.target("kuasar", "wazero-process", 5)
	}
	// The same targets, every runtime measured warm.
	r.backToBack(arms)
	for _, a := range arms[1:] {
		r.target(arms[0].again.Name, a.again.Name, r.targets[arms[0].s.Name+"/"+a.s.Name])
	}
	return r.interleave(ctx, n, arms)
}

// concurrencyLevels are the throughput curve's points.
var concurrencyLevels = []int{1, 2, 8, 32, 128}

func throughput(ctx context.Context, r *runner) error {
	perLevel := r.runs(2000, 200)
	sb, err := r.sandboxer(ctx, rig.SandboxerOptions{})
	if err != nil {
		return err
	}
	p50 := &Curve{Name: "task latency p50", XLabel: "concurrency", YLabel: "start to exit", Unit: "s"}
	p99 := &Curve{Name: "task latency p99", XLabel: "concurrency", YLabel: "start to exit", Unit: "s"}
	tput := &Curve{Name: "throughput", XLabel: "concurrency", YLabel: "tasks/s", Unit: "tasks/s", Target: 2000, TargetAbove: true}
	r.res.Curves = append(r.res.Curves, p50, p99, tput)
	best := 0.0
	for _, c := range concurrencyLevels {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n := max(perLevel, 4*c)
		s := r.series(fmt.Sprintf("c=%d", c), "s", fmt.Sprintf("task Create+Start, Wait (exit), Delete of hello.wasm, %d workers each with its own sandbox", c), false)
		r.progress.status("concurrency %d: starting %d sandboxes", c, c)
		type worker struct {
			run func(ctx context.Context) error
		}
		ws := make([]worker, c)
		var ids []string
		var closers []func()
		stopAll := func() {
			for _, f := range closers {
				f()
			}
			for _, id := range ids {
				sb.StopSandbox(context.WithoutCancel(ctx), id)
			}
		}
		for w := range ws {
			id := r.id("tp")
			tasks, closeFn, err := sb.StartSandbox(ctx, id)
			if err != nil {
				stopAll()
				return err
			}
			ids = append(ids, id)
			closers = append(closers, closeFn)
			req, err := sb.Bundle(id, "t", []string{"/hello.wasm"}, "")
			if err != nil {
				stopAll()
				return err
			}
			ws[w].run = func(ctx context.Context) error {
				code, err := rig.RunTask(ctx, tasks, req)
				if err == nil && code != 0 {
					err = fmt.Errorf("hello exited %d", code)
				}
				return err
			}
			if err := ws[w].run(ctx); err != nil { // warm
				stopAll()
				return err
			}
		}
		samples := make([][]float64, c)
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make([]error, c)
		start := time.Now()
		for w := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					t0 := time.Now()
					if err := ws[w].run(ctx); err != nil {
						errs[w] = err
						return
					}
					samples[w] = append(samples[w], time.Since(t0).Seconds())
				}
			}()
		}
		// The progress line follows the workers while they run.
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-done:
					return
				case <-time.After(200 * time.Millisecond):
					r.progress.status("concurrency %d: %d/%d tasks", c, min(next.Load(), int64(n)), n)
				}
			}
		}()
		wg.Wait()
		close(done)
		elapsed := time.Since(start).Seconds()
		stopAll()
		for w := range ws {
			if errs[w] != nil {
				return fmt.Errorf("concurrency %d: %w", c, errs[w])
			}
			s.Samples = append(s.Samples, samples[w]...)
		}
		sum := stats.Summarize(s.Samples)
		rate := float64(len(s.Samples)) / elapsed
		best = max(best, rate)
		p50.Points = append(p50.Points, Point{X: float64(c), Y: sum.Median})
		p99.Points = append(p99.Points, Point{X: float64(c), Y: sum.P99})
		tput.Points = append(tput.Points, Point{X: float64(c), Y: rate})
		r.progress.note(fmt.Sprintf("concurrency %d: %d tasks in %.2f s: %.0f tasks/s, p50 %s, p99 %s", c, len(s.Samples), elapsed, rate,
			formatValue(sum.Median, "s"), formatValue(sum.P99, "s")))
	}
	return nil
}

// idleArgs is an idle sandbox's workload: a module asleep in poll_oneoff,
// as an idle pod's Wasm container waits for its next timer. Under
// Kubernetes a container has no stdin unless its spec asks for one, so a
// guest blocked reading stdin is the rarer idle; it costs one descriptor
// more (its FIFO) and the same memory (sandboxer TestIdleSandboxCost
// counts both).
var idleArgs = []string{"/wasi.wasm", "sleep", "1000000"}

// fdsPerIdleSandbox and fdHeadroom size the open files density needs: an
// idle sandbox holds its Task API listening socket (the address containerd
// dials, at any time); the headroom covers what a sandbox's start holds
// for a moment (the harness's Task API connection, the bundle's files).
const (
	fdsPerIdleSandbox = 1
	fdHeadroom        = 64
)

// densityLevels are the density curve's points (live idle sandboxes).
func densityLevels(quick bool) []int {
	if quick {
		return []int{1, 10, 100, 1000}
	}
	return []int{1, 10, 100, 1000, 4000, 10000}
}

func density(ctx context.Context, r *runner) error {
	sb, err := r.sandboxer(ctx, rig.SandboxerOptions{})
	if err != nil {
		return err
	}
	startIdle := func(ctx context.Context) error {
		id := r.id("idle")
		tasks, closeFn, err := sb.StartSandbox(ctx, id)
		if err != nil {
			return err
		}
		defer closeFn()
		req, err := sb.Bundle(id, id, idleArgs, "")
		if err != nil {
			return err
		}
		return rig.StartTask(ctx, tasks, req)
	}
	if err := startIdle(ctx); err != nil { // warm: the first sandbox's one-time costs are the daemon's
		return err
	}
	pid := sb.Proc.Pid()
	baseRSS, err := procRSS(pid)
	if err != nil {
		return err
	}
	baseG, err := sb.Goroutines(ctx)
	if err != nil {
		return err
	}
	baseFD, err := rig.FDs(pid)
	if err != nil {
		return err
	}
	baseMem, err := sb.Memory(ctx)
	if err != nil {
		return err
	}
	start := r.series("sandbox start", "s", "sandbox Create+Start and idle task Create+Start while the others stay idle", false)
	perRSS := &Curve{Name: "RSS per idle sandbox", XLabel: "live sandboxes", YLabel: "sandboxer RSS / sandbox", Unit: "KiB", Target: 100}
	total := &Curve{Name: "sandboxer RSS", XLabel: "live sandboxes", YLabel: "RSS", Unit: "MiB"}
	gor := &Curve{Name: "goroutines per idle sandbox", XLabel: "live sandboxes", YLabel: "goroutines / sandbox", Unit: "goroutines"}
	heap := &Curve{Name: "Go heap in use per idle sandbox", XLabel: "live sandboxes", YLabel: "sandboxer RSS / sandbox", Unit: "KiB"}
	stacks := &Curve{Name: "goroutine stacks per idle sandbox", XLabel: "live sandboxes", YLabel: "sandboxer RSS / sandbox", Unit: "KiB"}
	fds := &Curve{Name: "fds per idle sandbox", XLabel: "live sandboxes", YLabel: "fds / sandbox", Unit: "fds"}
	r.res.Curves = append(r.res.Curves, perRSS, heap, stacks, total, gor, fds)
	levels := densityLevels(r.o.Quick)
	if r.o.Runs > 0 {
		levels = []int{r.o.Runs}
	}
	// Levels the sandboxer's RLIMIT_NOFILE cannot hold are replaced by
	// the largest count it can, saying so, rather than failing at EMFILE.
	if limit := rig.OpenFilesLimit(); limit > 0 {
		fit := uint64(0)
		if room := limit - min(limit, uint64(baseFD)+fdHeadroom); room > 0 {
			fit = room / fdsPerIdleSandbox
		}
		var kept []int
		for _, n := range levels {
			if uint64(n) <= fit {
				kept = append(kept, n)
				continue
			}
			r.skip("%d idle sandboxes: they need %d open files in the sandboxer (%d each: its Task API socket, over the %d it holds with one) and its RLIMIT_NOFILE is %d here (the shipped unit sets LimitNOFILE=%d; raising it needs CAP_SYS_RESOURCE): the curve stops at %d, the most that fit",
				n, uint64(n)*fdsPerIdleSandbox+uint64(baseFD), fdsPerIdleSandbox, baseFD, limit, rig.ShippedOpenFiles, fit)
			if len(kept) == 0 || uint64(kept[len(kept)-1]) < fit {
				kept = append(kept, int(fit))
			}
			break
		}
		levels = kept
	}
	live := 0
	point := func(n int) error {
		rss, err := procRSS(pid)
		if err != nil {
			return err
		}
		g, err := sb.Goroutines(ctx)
		if err != nil {
			return err
		}
		fd, err := rig.FDs(pid)
		if err != nil {
			return err
		}
		mem, err := sb.Memory(ctx)
		if err != nil {
			return err
		}
		x := float64(n)
		heap.Points = append(heap.Points, Point{X: x, Y: (float64(mem.HeapInuse) - float64(baseMem.HeapInuse)) / x / 1024})
		stacks.Points = append(stacks.Points, Point{X: x, Y: (float64(mem.Stacks) - float64(baseMem.Stacks)) / x / 1024})
		perRSS.Points = append(perRSS.Points, Point{X: x, Y: float64(rss-min(rss, baseRSS)) / x / 1024})
		total.Points = append(total.Points, Point{X: x, Y: float64(rss) / (1 << 20)})
		gor.Points = append(gor.Points, Point{X: x, Y: float64(g-baseG) / x})
		fds.Points = append(fds.Points, Point{X: x, Y: float64(fd-baseFD) / x})
		r.progress.note(fmt.Sprintf("%d idle sandboxes: sandboxer RSS %.1f MiB (%.1f KiB each: Go heap %.1f, stacks %.1f), %.2f goroutines and %.2f fds each",
			n, float64(rss)/(1<<20), float64(rss-min(rss, baseRSS))/x/1024, heap.Points[len(heap.Points)-1].Y, stacks.Points[len(stacks.Points)-1].Y,
			float64(g-baseG)/x, float64(fd-baseFD)/x))
		return nil
	}
	for _, n := range levels {
		for live < n {
			if err := ctx.Err(); err != nil {
				return err
			}
			t0 := time.Now()
			if err := startIdle(ctx); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				// The largest count reached is a result too: report
				// it, and why the next one failed.
				r.skip("idle sandbox %d of %d failed, the curve stops at %d: %v", live+1, n, live, err)
				if live > 0 && (len(perRSS.Points) == 0 || perRSS.Points[len(perRSS.Points)-1].X < float64(live)) {
					return point(live)
				}
				return nil
			}
			start.add(time.Since(t0).Seconds())
			live++
			if live%50 == 0 {
				r.progress.status("%d/%d idle sandboxes", live, levels[len(levels)-1])
			}
		}
		if err := point(n); err != nil {
			return err
		}
	}
	// The baseline: what one idle Wasm task costs as a process of its own.
	if err := idleWazeroRSS(ctx, r); err != nil {
		r.skip("wazero-process RSS: %v", err)
	}
	return nil
}

// idleWazeroRSS measures the RSS of a few idle `wazero run wasi.wasm sleep`
// processes: the memory a process-per-task runtime pays for each idle Wasm
// container, before its shim.
func idleWazeroRSS(ctx context.Context, r *runner) error {
	bin, err := rig.Tool("wazero")
	if err != nil {
		return err
	}
	path, err := fixtures.WriteFile(r.dir, "wasi")
	if err != nil {
		return err
	}
	s := r.series("wazero-process RSS", "KiB", "RSS of one idle `wazero run wasi.wasm sleep` process (the density scenario's module, asleep the same way), warm cache", true)
	for range 5 {
		cmd := exec.CommandContext(ctx, bin, append([]string{"run", "-cachedir", filepath.Join(r.benchDir, "wazero-cache"), path}, idleArgs[1:]...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			return err
		}
		// The module is idle once every thread of the process sleeps:
		// poll, with a deadline.
		rss, err := waitIdleRSS(ctx, cmd.Process.Pid)
		cmd.Process.Kill()
		cmd.Wait()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out.String())
		}
		s.add(float64(rss) / 1024)
	}
	return nil
}

// waitIdleRSS polls pid until it sleeps with a steady RSS (the module
// idle) and returns its RSS then.
func waitIdleRSS(ctx context.Context, pid int) (uint64, error) {
	deadline := time.Now().Add(30 * time.Second)
	stable := 0
	var last uint64
	for time.Now().Before(deadline) {
		rss, err := procRSS(pid)
		if err != nil {
			return 0, err
		}
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		sleeping := strings.Contains(string(st), ") S ")
		if sleeping && rss == last && rss > 0 {
			stable++
			if stable >= 3 {
				return rss, nil
			}
		} else {
			stable = 0
		}
		last = rss
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond): // polling interval
		}
	}
	return 0, fmt.Errorf("process %d did not settle idle in 30 s", pid)
}

func compileCache(ctx context.Context, r *runner) error {
	n := r.runs(30, 8)
	cacheDir := filepath.Join(r.dir, "cache")
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return err
	}
	warmEngine, err := wazero.New(ctx, wazero.WithCacheDir(cacheDir))
	if err != nil {
		return err
	}
	r.cleanup(func() { warmEngine.Close(context.Background()) })
	mod, err := warmEngine.Compile(ctx, fixtures.Hello)
	if err != nil {
		return err
	}
	cfg := wasm.RunConfig{Args: []string{"hello"}, Stdout: io.Discard}
	compileWith := func(opts ...wazero.Option) func(ctx context.Context, _ int) (float64, error) {
		return func(ctx context.Context, _ int) (float64, error) {
			e, err := wazero.New(ctx, opts...)
			if err != nil {
				return 0, err
			}
			defer e.Close(context.Background())
			t0 := time.Now()
			if _, err := e.Compile(ctx, fixtures.Hello); err != nil {
				return 0, err
			}
			return time.Since(t0).Seconds(), nil
		}
	}
	hello, err := fixtures.WriteFile(r.dir, "hello")
	if err != nil {
		return err
	}
	warmState := filepath.Join(r.dir, "state-warm")
	kuasarRun := func(state func() string) func(ctx context.Context, _ int) error {
		return func(ctx context.Context, _ int) error {
			cmd := exec.CommandContext(ctx, r.o.Binary, "run", hello)
			cmd.Env = append(os.Environ(), "KUASAR_STATE_DIR="+state())
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("kuasar run: %w: %s", err, out)
			}
			return nil
		}
	}
	arms := []arm{
		{s: r.series("compile cold", "s", "compile hello.wasm (28 KB) in a fresh engine, no cache", false), once: compileWith()},
		{s: r.series("compile disk cache", "s", "compile hello.wasm in a fresh engine whose disk cache holds it (what a fresh process pays)", false), once: compileWith(wazero.WithCacheDir(cacheDir))},
		{s: r.series("run warm in-process", "s", "instantiate + run hello.wasm, compiled module reused (a sandbox's warm start)", false), once: timed(func(ctx context.Context, _ int) error {
			code, err := mod.Run(ctx, cfg)
			if err == nil && code != 0 {
				err = fmt.Errorf("hello exited %d", code)
			}
			return err
		})},
		{s: r.series("kuasar run, warm cache", "s", "a fresh `kuasar run hello.wasm` process, compilation cache warm", false), once: timed(kuasarRun(func() string { return warmState }))},
		{s: r.series("kuasar run, cold cache", "s", "a fresh `kuasar run hello.wasm` process with an empty state directory", false), once: timed(kuasarRun(func() string {
			d, _ := os.MkdirTemp(r.dir, "state")
			return d
		}))},
	}
	if a, ok := r.wazeroArm("hello"); ok {
		arms = append(arms, a)
	}
	return r.interleave(ctx, n, arms)
}

func procRSS(pid int) (uint64, error) { return procfs.RSSBytes(pid) }
