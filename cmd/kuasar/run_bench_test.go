package main

import (
	"os"
	"os/exec"
	"testing"
)

// BenchmarkRunProcessWarm starts a fresh `kuasar run hello.wasm` process whose
// compilation cache already holds the module: the everyday CLI start.
func BenchmarkRunProcessWarm(b *testing.B) {
	bin, hello := binary(b), fixture(b, "hello")
	state := b.TempDir()
	env := append(os.Environ(), "KUASAR_STATE_DIR="+state)
	runBin(b, bin, env, hello) // fill the cache
	for b.Loop() {
		runBin(b, bin, env, hello)
	}
}

// BenchmarkRunProcessCold is BenchmarkRunProcessWarm with an empty cache
// directory each time: the first run of a module.
func BenchmarkRunProcessCold(b *testing.B) {
	bin, hello := binary(b), fixture(b, "hello")
	for b.Loop() {
		b.StopTimer()
		state, err := os.MkdirTemp(b.TempDir(), "state")
		if err != nil {
			b.Fatal(err)
		}
		env := append(os.Environ(), "KUASAR_STATE_DIR="+state)
		b.StartTimer()
		runBin(b, bin, env, hello)
	}
}

func runBin(b *testing.B, bin string, env []string, module string) {
	cmd := exec.Command(bin, "run", module)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("kuasar run: %v: %s", err, out)
	}
}
