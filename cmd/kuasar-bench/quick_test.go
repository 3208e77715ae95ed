package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/bench"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

// TestQuickRunEndToEnd runs `kuasar bench --quick --runs 2 --json F --plot
// D` as a user does after `make build`: the real kuasar, kuasar-bench,
// kuasar-sandboxer and containerd-shim-kuasar-v1 binaries, side by side in
// one directory, against real runc, containerd and wazero where `make deps`
// installed them (an arm whose tool is missing is reported as skipped, and
// the test accepts that only with the reason). It checks what the run
// produces, not how fast: the report's every scenario with samples or a
// reason, the ratios of wasm-start's arms, density's curve, the plots, and
// nothing left mounted under the harness's state. The figures themselves
// are docs/benchmarks.md's, measured on a quiet machine.
func TestQuickRunEndToEnd(t *testing.T) {
	testenv.RequireRoot(t)
	if testing.Short() {
		t.Skip("builds four binaries and runs every quick scenario")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on $PATH: the test builds the binaries")
	}
	bin := t.TempDir()
	build := exec.Command(goBin, "build", "-o", bin+"/", "./cmd/kuasar", "./cmd/kuasar-bench", "./cmd/kuasar-sandboxer", "./cmd/containerd-shim-kuasar-v1")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	state := testenv.TempDir(t)
	out := t.TempDir()
	report, plots := filepath.Join(out, "bench.json"), filepath.Join(out, "plots")

	mountsBefore := harnessMounts(state)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "kuasar"), "bench", "--quick", "--runs", "2", "--json", report, "--plot", plots)
	cmd.Env = append(os.Environ(), "KUASAR_STATE_DIR="+state)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kuasar bench --quick: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}

	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report %s: %v", report, err)
	}
	if rep.Schema != bench.SchemaVersion || !rep.Quick || rep.Machine.CPUs == 0 {
		t.Errorf("report header: schema %d (want %d), quick %v, machine %+v", rep.Schema, bench.SchemaVersion, rep.Quick, rep.Machine)
	}
	byName := map[string]*bench.ScenarioResult{}
	for _, sc := range rep.Scenarios {
		byName[sc.Name] = sc
	}
	for _, s := range bench.Scenarios() {
		if !s.Quick {
			continue
		}
		sc := byName[s.Name]
		if sc == nil {
			t.Errorf("quick scenario %s is missing from the report", s.Name)
			continue
		}
		for _, why := range sc.Skipped {
			t.Logf("%s: skipped: %s", s.Name, why)
		}
		sampled := false
		for _, se := range sc.Series {
			if !se.Baseline && len(se.Samples) > 0 {
				sampled = true
			}
		}
		if !sampled && len(sc.Skipped) == 0 {
			t.Errorf("%s: no sample of kuasar and no reason why", s.Name)
		}
	}

	// wasm-start needs nothing but the binaries: kuasar's series, cold and
	// back to back, have their two samples each, and each baseline that
	// ran has its ratio.
	ws := byName["wasm-start"]
	if ws == nil {
		t.Fatal("no wasm-start in the report")
	}
	series := map[string]*bench.Series{}
	for _, se := range ws.Series {
		series[se.Name] = se
	}
	for _, name := range []string{"kuasar", "kuasar, back to back"} {
		if se := series[name]; se == nil || len(se.Samples) != 2 || se.Stats.Median <= 0 {
			t.Errorf("wasm-start %q: %+v, want 2 samples", name, se)
		}
	}
	for _, base := range []string{"runc-run", "wazero-process"} {
		if series[base] == nil || len(series[base].Samples) == 0 {
			if !strings.Contains(strings.Join(ws.Skipped, "\n"), base) {
				t.Errorf("wasm-start: baseline %s neither ran nor was reported skipped (%q)", base, ws.Skipped)
			}
			continue
		}
		found := false
		for _, r := range ws.Ratios {
			if r.Series == "kuasar" && r.Baseline == base && r.Ratio > 0 && r.Target > 0 {
				found = true
			}
		}
		if !found {
			t.Errorf("wasm-start: no ratio of kuasar to %s with its target in %+v", base, ws.Ratios)
		}
	}
	if d := byName["density"]; d != nil {
		points := 0
		for _, c := range d.Curves {
			if c.Name == "RSS per idle sandbox" {
				points = len(c.Points)
			}
		}
		if points == 0 {
			t.Errorf("density: no point on its RSS curve (skipped: %q)", d.Skipped)
		}
	}
	for _, f := range []string{"wasm-start-cdf.svg", "ratios.svg", "density-curve1-rss-per-idle-sandbox.svg"} {
		b, err := os.ReadFile(filepath.Join(plots, f))
		if err != nil || !bytes.HasPrefix(b, []byte("<svg")) {
			t.Errorf("plot %s: %v, starts %q", f, err, b[:min(len(b), 20)])
		}
	}
	for _, m := range harnessMounts(state) {
		if !slices.Contains(mountsBefore, m) {
			t.Errorf("mount left behind by the run: %s", m)
		}
	}
}

// harnessMounts lists the mount points under the directories a harness
// run creates (its scratch directory in $TMPDIR, its sandboxers' state and
// bundles on /dev/shm: kb*) and under state, the run's state directory.
// Other tests' directories are left out: they mount and unmount while this
// test runs.
func harnessMounts(state string) []string {
	out := testenv.MountsUnder(state)
	for _, dir := range []string{"/dev/shm", os.TempDir()} {
		for _, m := range testenv.MountsUnder(dir) {
			if strings.HasPrefix(strings.TrimPrefix(m, dir+"/"), "kb") {
				out = append(out, m)
			}
		}
	}
	return out
}
