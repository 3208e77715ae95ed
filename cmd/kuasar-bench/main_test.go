package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchCommandLine checks the harness's command line without running a
// benchmark: help on stdout, the scenario list, and refusals of an unknown
// scenario, a bad flag or a missing state directory before anything starts.
func TestBenchCommandLine(t *testing.T) {
	tests := []struct {
		name             string
		args             []string
		wantCode         int
		wantOut, wantErr string
		noStateDir       bool
	}{
		{"help on stdout", []string{"--help"}, 0, "usage: kuasar bench [SCENARIO...]", "", false},
		{"help after a name", []string{"wasm-start", "-h"}, 0, "--quick", "", false},
		{"list", []string{"--list"}, 0, "wasm-start", "", false},
		{"unknown scenario, after a flag", []string{"--quick", "nope"}, 2, "", `unknown scenario "nope"`, false},
		{"negative runs", []string{"wasm-start", "--runs", "-1"}, 2, "", "--runs -1", false},
		{"bad flag", []string{"--fast"}, 2, "", "flag provided but not defined", false},
		{"no state directory", []string{"wasm-start"}, 2, "", "KUASAR_STATE_DIR is not set", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			state := t.TempDir()
			if tt.noStateDir {
				state = ""
			}
			t.Setenv(stateDirEnv, state)
			// Never run: every case stops before a scenario starts.
			t.Setenv(kuasarEnv, filepath.Join(t.TempDir(), "kuasar"))
			code := run(context.Background(), tt.args, &stdout, &stderr)
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
