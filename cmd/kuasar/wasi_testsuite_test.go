package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestWASITestsuite runs the public WASI test suite's preview-1 tests
// (github.com/WebAssembly/wasi-testsuite, its prebuilt binaries on the
// prod/testsuite-base branch) through `kuasar run`, as the suite's runner
// does for other engines: each test's fs-tests.dir (copied) mounted at "/",
// its args and env, and its expected exit code and stdout. It is a
// reference to check against locally, not part of CI: it runs only when
// KUASAR_WASI_TESTSUITE names a checkout of that branch.
func TestWASITestsuite(t *testing.T) {
	suite := os.Getenv("KUASAR_WASI_TESTSUITE")
	if suite == "" {
		t.Skip("set KUASAR_WASI_TESTSUITE to a checkout of wasi-testsuite's prod/testsuite-base branch")
	}
	tests, _ := filepath.Glob(filepath.Join(suite, "tests", "*", "testsuite", "wasm32-wasip1", "*.wasm"))
	if len(tests) == 0 {
		t.Fatalf("no tests/*/testsuite/wasm32-wasip1/*.wasm under %s", suite)
	}
	kuasar := binary(t)
	state := "KUASAR_STATE_DIR=" + t.TempDir()
	for _, wasm := range tests {
		dir := filepath.Dir(wasm)
		name := filepath.Base(filepath.Dir(filepath.Dir(dir))) + "/" + strings.TrimSuffix(filepath.Base(wasm), ".wasm")
		t.Run(name, func(t *testing.T) {
			var cfg struct {
				Root     string            `json:"root"`
				Args     []string          `json:"args"`
				Env      map[string]string `json:"env"`
				ExitCode int               `json:"exit_code"`
				Stdout   *string           `json:"stdout"`
			}
			if b, err := os.ReadFile(strings.TrimSuffix(wasm, ".wasm") + ".json"); err == nil {
				if err := json.Unmarshal(b, &cfg); err != nil {
					t.Fatal(err)
				}
			}
			args := []string{"run"}
			for k, v := range cfg.Env {
				args = append(args, "--env", k+"="+v)
			}
			if cfg.Root != "" {
				root := filepath.Join(t.TempDir(), "root")
				if out, err := exec.Command("cp", "-a", filepath.Join(dir, cfg.Root), root).CombinedOutput(); err != nil {
					t.Fatalf("copy %s: %v: %s", cfg.Root, err, out)
				}
				args = append(args, "--dir", root+":/")
			}
			args = append(append(args, wasm, "--"), cfg.Args...)
			r := runProcess(t, []string{state}, "", kuasar, args...)
			if r.code != cfg.ExitCode || (cfg.Stdout != nil && r.stdout != *cfg.Stdout) {
				t.Errorf("exit %d (want %d), stdout %q, stderr %q", r.code, cfg.ExitCode, r.stdout, r.stderr)
			}
		})
	}
}
