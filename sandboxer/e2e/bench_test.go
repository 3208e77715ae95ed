package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

// criRun runs one pod with one short container through crictl and removes
// it: runp, create, start, poll inspect until exited, rmp. It returns the time
// from runp to the container seen exited, the span the baseline
// figures measure; removing the pod afterwards is not counted.
func criRun(b *testing.B, e *testenv.Env, runtime, podCfg, ctrCfg string) time.Duration {
	start := time.Now()
	pod, err := e.CrictlErr("runp", "--runtime", runtime, podCfg)
	if err != nil {
		b.Fatal(err)
	}
	ctr, err := e.CrictlErr("create", pod, ctrCfg, podCfg)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := e.CrictlErr("start", ctr); err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, err := e.CrictlErr("inspect", "-o", "go-template", "--template", "{{.status.state}}", ctr)
		if err == nil && strings.Contains(out, "CONTAINER_EXITED") {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s container did not exit: %s %v", runtime, out, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	if _, err := e.CrictlErr("rmp", "-f", pod); err != nil {
		b.Fatal(err)
	}
	return took
}

// BenchmarkCRI compares, through the same containerd and crictl, a kuasar
// Wasm pod running the hello module with a runc pod running busybox echo.
// Each op is a whole pod life (runp, create, start, exit, rmp) including the
// crictl process spawns both share; the p50/p90 figures count runp to exit,
// as the baseline figures quoted in the README do.
func BenchmarkCRI(b *testing.B) {
	e := testenv.NewEnv(b)
	e.RequireRuncShim()
	e.ImportPause()
	importWasm(b, e, fixtures.Hello, "hello.wasm", "docker.io/kuasar/hello-bench:test", false)
	e.ImportImage(testenv.BusyboxImage(b, []string{"/bin/echo"}), "docker.io/library/busybox-echo:bench")
	cases := []struct {
		name, runtime, image string
		args                 []string
	}{
		{"kuasar-wasm-hello", "kuasar", "docker.io/kuasar/hello-bench:test", nil},
		{"runc-busybox-echo", "runc", "docker.io/library/busybox-echo:bench", []string{"hello"}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			podCfg := podJSON(b, e, "bench-"+tc.runtime, nil)
			ctrCfg := ctrJSON(b, e, "bench-"+tc.runtime, tc.image, tc.args, false)
			criRun(b, e, tc.runtime, podCfg, ctrCfg) // warm
			var durs []time.Duration
			for b.Loop() {
				durs = append(durs, criRun(b, e, tc.runtime, podCfg, ctrCfg))
			}
			slices.Sort(durs)
			b.ReportMetric(ms(durs[len(durs)/2]), "p50-ms")
			b.ReportMetric(ms(durs[(len(durs)-1)*9/10]), "p90-ms")
		})
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
