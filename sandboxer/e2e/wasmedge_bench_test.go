//go:build wasmedge

package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

// BenchmarkPodEngines measures one whole CRI pod on each Wasm engine side
// by side, through containerd and crictl: runp, create, start, wait for
// the hello container's exit, rm, stopp, rmp. The module is compiled (AOT
// for WasmEdge) by a warm-up pod first.
func BenchmarkPodEngines(b *testing.B) {
	e := testenv.NewEnv(b)
	const ref = "docker.io/kuasar/hello-bench:test"
	importWasm(b, e, fixtures.Hello, "hello.wasm", ref, false)
	for _, engine := range []string{"wazero", "wasmedge"} {
		b.Run(engine, func(b *testing.B) {
			ann := map[string]string{"kuasar.io/wasm-engine": engine, "kuasar.io/isolation": "wasm"}
			n := 0
			pod := func() {
				n++
				name := fmt.Sprintf("bench-%s-%d", engine, n)
				podCfg := podJSON(b, e, name, ann)
				p := e.Crictl("runp", "--runtime", "kuasar", podCfg)
				c := e.Crictl("create", p, ctrJSON(b, e, name, ref, nil, false), podCfg)
				e.Crictl("start", c)
				waitState(b, e, c, "CONTAINER_EXITED", 60*time.Second)
				e.Crictl("rm", c)
				e.Crictl("stopp", p)
				e.Crictl("rmp", p)
			}
			pod() // warm-up: compiles the module
			b.ResetTimer()
			for b.Loop() {
				pod()
			}
		})
	}
}
