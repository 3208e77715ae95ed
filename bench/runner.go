package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/bench/internal/stats"
)

// runner is what a scenario measures with: its result, its scratch
// directory, the run's options and shared state.
type runner struct {
	o        Options
	res      *ScenarioResult
	dir      string // scratch directory of this scenario, removed after the run
	benchDir string // StateDir/bench, kept between runs (caches)
	shared   *sharedState
	targets  map[string]float64
	progress *progress
	closers  []func()
	seq      atomic.Int64
}

// runs is the number of samples per series: --runs, else def (quickDef
// with --quick).
func (r *runner) runs(def, quickDef int) int {
	switch {
	case r.o.Runs > 0:
		return r.o.Runs
	case r.o.Quick:
		return quickDef
	}
	return def
}

// series adds a series to the scenario's result.
func (r *runner) series(name, unit, what string, baseline bool) *Series {
	s := &Series{Name: name, Unit: unit, What: what, Baseline: baseline}
	r.res.Series = append(r.res.Series, s)
	return s
}

// target records the ratio series/baseline the project aims at.
func (r *runner) target(series, baseline string, ratio float64) {
	r.targets[series+"/"+baseline] = ratio
}

// skip records that an arm could not run and why.
func (r *runner) skip(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.res.Skipped = append(r.res.Skipped, msg)
	r.progress.note(msg)
}

// arm is one side of an interleaved comparison: once runs one sample and
// returns its duration (or another value in the series' unit).
type arm struct {
	s    *Series
	once func(ctx context.Context, i int) (float64, error)
	// warmed arms skip interleave's warm-up run (their caller ran one).
	warmed bool
	// again, when set, takes a second sample of the arm right after each
	// of s's (see backToBack).
	again *Series
}

// backToBackSuffix names the series of an arm's second sample in a round.
const backToBackSuffix = ", back to back"

// backToBack gives each arm a second series, sampled right after the
// arm's own sample in every round, and compares each such series only
// with the others: the same runtimes measured warm (caches, branch
// predictors and the kernel's paths left hot by the sample before),
// beside the first series, each taken after the other arms ran, as a
// sporadic start meets the machine. A short operation loses more to a
// cold machine than a long one does (docs/benchmarks.md, "Cold and back
// to back"), so the two pairs of ratios differ; both are reported.
func (r *runner) backToBack(arms []arm) {
	var names []string
	for i := range arms {
		a := &arms[i]
		a.again = r.series(a.s.Name+backToBackSuffix, a.s.Unit, a.s.What+"; run again at once after that sample, before any other arm", a.s.Baseline)
		if a.s.Baseline {
			names = append(names, a.again.Name)
		}
	}
	for i := range arms {
		a := &arms[i]
		if a.s.Baseline {
			continue
		}
		for _, b := range arms {
			if b.s.Baseline {
				a.s.vs = append(a.s.vs, b.s.Name)
			}
		}
		a.again.vs = names
	}
}

// timed wraps a function that does one run into an arm's once, measuring
// its wall-clock time in seconds.
func timed(f func(ctx context.Context, i int) error) func(ctx context.Context, i int) (float64, error) {
	return func(ctx context.Context, i int) (float64, error) {
		start := time.Now()
		if err := f(ctx, i); err != nil {
			return 0, err
		}
		return time.Since(start).Seconds(), nil
	}
}

// interleave runs each arm once to warm it (not recorded), then n rounds
// of one sample per arm (two, one after the other, for an arm with a
// back-to-back series), the arms' order rotating each round, so that a
// slow minute of the machine falls on every arm alike.
func (r *runner) interleave(ctx context.Context, n int, arms []arm) error {
	for _, a := range arms {
		if a.warmed {
			continue
		}
		if _, err := a.once(ctx, -1); err != nil {
			return fmt.Errorf("%s (warm-up): %w", a.s.Name, err)
		}
	}
	for i := range n {
		for j := range arms {
			if err := ctx.Err(); err != nil {
				return err
			}
			a := arms[(i+j)%len(arms)]
			v, err := a.once(ctx, i)
			if err != nil {
				return fmt.Errorf("%s sample %d: %w", a.s.Name, i, err)
			}
			a.s.add(v)
			if a.again != nil {
				v, err := a.once(ctx, i)
				if err != nil {
					return fmt.Errorf("%s sample %d: %w", a.again.Name, i, err)
				}
				a.again.add(v)
			}
		}
		r.progress.update(i+1, n, r.res.Series)
	}
	return nil
}

// progress is the live line of one scenario on the terminal: rewritten in
// place on a terminal, printed at the end otherwise.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	name  string
	tty   bool
	last  time.Time
	start time.Time
}

func newProgress(w io.Writer, name string) *progress {
	p := &progress{w: w, name: name, start: time.Now()}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		p.tty = err == nil
	}
	p.line(fmt.Sprintf("%s: starting", name), true)
	return p
}

// line writes text as the current progress line; final lines end with a
// newline, others are only written on a terminal, at most ten a second.
func (p *progress) line(text string, final bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !final && (!p.tty || time.Since(p.last) < 100*time.Millisecond) {
		return
	}
	p.last = time.Now()
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", text)
		if final {
			fmt.Fprintln(p.w)
		}
		return
	}
	fmt.Fprintln(p.w, text)
}

// update shows how far the scenario is and each series' median so far.
func (p *progress) update(done, total int, series []*Series) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %d/%d %s", p.name, done, total, time.Since(p.start).Round(time.Second))
	for _, s := range series {
		if len(s.Samples) > 0 {
			fmt.Fprintf(&b, "  %s %s", s.Name, formatValue(stats.Summarize(s.Samples).Median, s.Unit))
		}
	}
	p.line(b.String(), false)
}

// status shows a free-form step ("starting containerd").
func (p *progress) status(format string, args ...any) {
	p.line(p.name+": "+fmt.Sprintf(format, args...), false)
}

// note prints a line that stays (a skipped arm).
func (p *progress) note(msg string) { p.line(p.name+": "+msg, true) }

func (p *progress) done(res *ScenarioResult) {
	n := 0
	for _, s := range res.Series {
		n += len(s.Samples)
	}
	msg := fmt.Sprintf("%s: done in %.1f s, %d samples", p.name, res.Seconds, n)
	if res.Error != "" {
		msg = fmt.Sprintf("%s: FAILED after %.1f s: %s", p.name, res.Seconds, res.Error)
	}
	p.line(msg, true)
}
