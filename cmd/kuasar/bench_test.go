package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchLauncher checks that kuasar bench runs the harness's own binary
// (built here from ./cmd/kuasar-bench) with kuasar's arguments, streams and
// exit codes, and that without that binary it says how to get it. The
// harness's command line itself is tested in cmd/kuasar-bench.
func TestBenchLauncher(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on $PATH: the test builds kuasar-bench")
	}
	helper := filepath.Join(t.TempDir(), benchHelper)
	if out, err := exec.Command(goBin, "build", "-o", helper, "../kuasar-bench").CombinedOutput(); err != nil {
		t.Fatalf("building kuasar-bench: %v\n%s", err, out)
	}
	missing := filepath.Join(t.TempDir(), benchHelper)
	tests := []struct {
		name             string
		helper           string
		args             []string
		wantCode         int
		wantOut, wantErr string
	}{
		{"help on stdout", helper, []string{"bench", "--help"}, 0, "usage: kuasar bench [SCENARIO...]", ""},
		{"list", helper, []string{"bench", "--list"}, 0, "crictl", ""},
		{"unknown scenario keeps exit code 2", helper, []string{"bench", "--quick", "nope"}, 2, "", `unknown scenario "nope"`},
		{"no harness binary", missing, []string{"bench", "--list"}, 1, "", "run make build"},
	}
	orig := findBenchHelper
	t.Cleanup(func() { findBenchHelper = orig })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			findBenchHelper = func() (string, error) {
				if _, err := os.Stat(tt.helper); err != nil {
					// Neither next to the test binary nor on this $PATH.
					t.Setenv("PATH", t.TempDir())
					return orig()
				}
				return tt.helper, nil
			}
			var stdout, stderr bytes.Buffer
			env := &cliEnv{stdout: &stdout, stderr: &stderr, stateDir: t.TempDir()}
			code := runCLI(context.Background(), env, tt.args)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantOut) {
				t.Errorf("stdout lacks %q:\n%s", tt.wantOut, stdout.String())
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, stderr.String())
			}
		})
	}
}

// TestKuasarLinksNoHarness keeps the harness and its clients out of the
// kuasar binary: Go initialises every linked package in every fresh kuasar
// process, and the CRI API alone allocated 218 KB there.
func TestKuasarLinksNoHarness(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on $PATH: the test lists the binary's packages")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	for _, banned := range []string{
		"github.com/kuasar-go/kuasar/bench",
		"k8s.io/cri-api",
		"github.com/containerd/containerd/api/services/sandbox/v1",
		"golang.org/x/perf",
	} {
		for _, d := range deps {
			if d == banned || strings.HasPrefix(d, banned+"/") {
				t.Errorf("kuasar links %s: keep it in kuasar-bench (cmd/kuasar-bench), which kuasar bench runs", d)
			}
		}
	}
}
