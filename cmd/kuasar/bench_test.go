package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestBenchCommandLine checks kuasar bench's command line without running a
// benchmark: help on stdout, the scenario list, and refusals of an unknown
// scenario or a bad flag before anything starts.
func TestBenchCommandLine(t *testing.T) {
	tests := []struct {
		name             string
		args             []string
		wantCode         int
		wantOut, wantErr string
	}{
		{"help on stdout", []string{"bench", "--help"}, 0, "usage: kuasar bench [SCENARIO...]", ""},
		{"help after a name", []string{"bench", "wasm-start", "-h"}, 0, "--quick", ""},
		{"list", []string{"bench", "--list"}, 0, "wasm-start", ""},
		{"unknown scenario, after a flag", []string{"bench", "--quick", "nope"}, 2, "", `unknown scenario "nope"`},
		{"negative runs", []string{"bench", "wasm-start", "--runs", "-1"}, 2, "", "--runs -1"},
		{"bad flag", []string{"bench", "--fast"}, 2, "", "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
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
