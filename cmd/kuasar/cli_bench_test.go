package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

// BenchmarkCLIParse measures what the command library costs a process:
// building the command tree, parsing a `kuasar run` command line with
// every kind of flag, and failing at the missing file (so no guest runs).
func BenchmarkCLIParse(b *testing.B) {
	env := &cliEnv{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, stateDir: b.TempDir()}
	args := []string{"run", "-e", "A=1", "--env", "B=2", "-m", "64Mi", "--timeout", "5s", "-w", "/", "--isolation", "wasm", "/nonexistent/x.wasm", "--", "a", "b"}
	for b.Loop() {
		if code := runCLI(context.Background(), env, args); code != exitKuasarError {
			b.Fatalf("exit code %d, want %d", code, exitKuasarError)
		}
	}
}
