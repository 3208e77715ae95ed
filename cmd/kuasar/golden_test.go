package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// update rewrites testdata/*.golden from the current output:
// go test ./cmd/kuasar -run 'TestGolden' -update
var update = flag.Bool("update", false, "rewrite cmd/kuasar/testdata/*.golden from the current output")

// goldenNormalizer replaces what differs between machines and builds (the
// state directory, versions, times) with placeholders.
func goldenNormalizer(state string) func(string) string {
	v := currentVersion()
	r := strings.NewReplacer(state, "$STATE", v.Go, "$GO", v.Platform, "$PLATFORM")
	// Module versions (wazero's, the containerd API's) and kuasar's own.
	semver := regexp.MustCompile(`\bv\d+\.\d+\.\d+[-+.\w]*`)
	revision := regexp.MustCompile(`("revision": |revision: +)"?[0-9a-f]{7,40}"?`)
	times := regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
	return func(s string) string {
		s = semver.ReplaceAllString(r.Replace(s), "$$SEMVER")
		s = revision.ReplaceAllString(s, `${1}$$REVISION`)
		return times.ReplaceAllString(s, "$$TIME")
	}
}

// checkGolden compares got with testdata/name.golden, or rewrites it under
// -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update to accept it):\n--- got\n%s\n--- want\n%s", p, got, want)
	}
}

// transcript is one command's exit code and output, as golden files hold it.
func transcript(r cliResult, norm func(string) string) string {
	return "exit code: " + strconv.Itoa(r.code) + "\n--- stdout\n" + norm(r.stdout) + "--- stderr\n" + norm(r.stderr)
}

// TestGoldenCLI pins the help, version, usage errors, exit codes and JSON
// shapes of the commands that need no guest to run.
func TestGoldenCLI(t *testing.T) {
	state := t.TempDir()
	norm := goldenNormalizer(state)
	tests := []struct {
		name     string
		args     []string
		wantCode int
	}{
		{"help", []string{"--help"}, 0},
		{"no-args", nil, 0},
		{"help-run", []string{"run", "--help"}, 0},
		{"help-run-short", []string{"run", "-h"}, 0},
		{"help-check", []string{"check", "--help"}, 0},
		{"help-images", []string{"images", "--help"}, 0},
		{"help-image", []string{"image", "--help"}, 0},
		{"help-image-rm", []string{"help", "image", "rm"}, 0},
		{"help-pull", []string{"pull", "--help"}, 0},
		{"version", []string{"version"}, 0},
		{"version-flag", []string{"--version"}, 0},
		{"version-json", []string{"version", "--format", "json"}, 0},
		{"version-bad-format", []string{"version", "--format", "yaml"}, exitUsage},
		{"unknown-command", []string{"frobnicate"}, exitUsage},
		{"run-missing-target", []string{"run"}, exitKuasarError},
		{"run-unknown-flag", []string{"run", "--frob", "x.wasm"}, exitKuasarError},
		{"run-one-dash-long-flag", []string{"run", "-dir", ".", "x.wasm"}, exitKuasarError},
		{"run-lowercase-m", []string{"run", "-m", "512m", "x.wasm"}, exitKuasarError},
		{"run-missing-file", []string{"run", "/nonexistent/x.wasm"}, exitKuasarError},
		{"images-empty", []string{"images"}, 0},
		{"images-empty-json", []string{"images", "--format", "json"}, 0},
		{"image-rm-missing", []string{"image", "rm", "nope:v1"}, exitImageFailure},
		{"image-rm-no-args", []string{"image", "rm"}, exitUsage},
		{"image-inspect-missing", []string{"image", "inspect", "nope:v1"}, exitImageFailure},
		{"image-tag-one-arg", []string{"image", "tag", "a"}, exitUsage},
		{"pull-no-args", []string{"pull"}, exitUsage},
		{"vm-templates-bad-arg", []string{"vm-templates", "frob"}, exitKuasarError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runInProcess(t, state, "", tc.args...)
			if r.code != tc.wantCode {
				t.Errorf("kuasar %s: exit code %d, want %d (stderr %q)", strings.Join(tc.args, " "), r.code, tc.wantCode, r.stderr)
			}
			checkGolden(t, tc.name, transcript(r, norm))
		})
	}
}

// TestGoldenImageCommands builds a Wasm image, imports it, and pins what
// images, image inspect (JSON), image tag and image rm print.
func TestGoldenImageCommands(t *testing.T) {
	state, work := t.TempDir(), t.TempDir()
	norm := goldenNormalizer(state)
	layout := filepath.Join(work, "layout")
	steps := []struct {
		name     string
		args     []string
		wantCode int
	}{
		{"image-build", []string{"image", "build", "--wasm", fixture(t, "hello"), "--tag", "example.com/hello:v1", "--output", layout}, 0},
		{"pull-layout", []string{"pull", layout + ":example.com/hello:v1"}, 0},
		{"images-one", []string{"images"}, 0},
		{"images-one-json", []string{"images", "--format", "json"}, 0},
		{"image-inspect-json", []string{"image", "inspect", "example.com/hello:v1"}, 0},
		{"image-inspect-text", []string{"image", "inspect", "--format", "text", "example.com/hello:v1"}, 0},
		{"image-tag", []string{"image", "tag", "example.com/hello:v1", "example.com/hello:latest"}, 0},
		{"image-rm-shared", []string{"image", "rm", "example.com/hello:v1"}, 0},
		{"image-rm-last", []string{"image", "rm", "example.com/hello:latest"}, 0},
		{"image-prune-empty", []string{"image", "prune", "--format", "json"}, 0},
	}
	for _, s := range steps {
		r := runInProcess(t, state, "", s.args...)
		if r.code != s.wantCode {
			t.Fatalf("kuasar %s: exit code %d, want %d (stderr %q)", strings.Join(s.args, " "), r.code, s.wantCode, r.stderr)
		}
		checkGolden(t, s.name, strings.ReplaceAll(transcript(r, norm), work, "$WORK"))
	}
	// Nothing of the image is left in the store.
	for _, d := range []string{"blobs/sha256", "rootfs"} {
		ents, err := os.ReadDir(filepath.Join(state, "images", d))
		if err != nil || len(ents) != 0 {
			t.Errorf("%s after image rm: %d entries, %v; want none", d, len(ents), err)
		}
	}
}

// TestCheckJSON checks the shape of `kuasar check --format json`: every
// check has an area, a status of ok, warn or fail, and a detail; ok is
// false exactly when one failed, and the exit code says the same.
func TestCheckJSON(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "absent.toml")
	r := runInProcess(t, t.TempDir(), "", "check", "--config", cfg, "--format", "json")
	var out struct {
		OK     *bool `json:"ok"`
		Checks []map[string]any
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("check --format json: %v\n%s", err, r.stdout)
	}
	if out.OK == nil || len(out.Checks) < 5 {
		t.Fatalf("check --format json = %s: want ok and the checks", r.stdout)
	}
	failed := false
	for _, c := range out.Checks {
		for k := range c {
			if k != "area" && k != "status" && k != "detail" && k != "fix" {
				t.Errorf("check %v has unexpected key %q", c, k)
			}
		}
		status, _ := c["status"].(string)
		if status != "ok" && status != "warn" && status != "fail" {
			t.Errorf("check %v: status %q, want ok, warn or fail", c, status)
		}
		if a, _ := c["area"].(string); a == "" {
			t.Errorf("check %v has no area", c)
		}
		if _, hasFix := c["fix"]; hasFix && status == "ok" {
			t.Errorf("check %v: an ok check carries a fix", c)
		}
		failed = failed || status == "fail"
	}
	if *out.OK == failed || (r.code == 1) != failed {
		t.Errorf("ok = %v, exit code %d, a check failed = %v: want them to agree", *out.OK, r.code, failed)
	}
	// The text report has the same checks, one line each (fixes indented).
	text := runInProcess(t, t.TempDir(), "", "check", "--config", cfg)
	if text.code != r.code {
		t.Errorf("check exit code %d, with --format json %d", text.code, r.code)
	}
}

// TestCompletion checks that the completion scripts are generated, that the
// bash one is valid bash, and that completing values works through cobra's
// __complete protocol (what the scripts call).
func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := runInProcess(t, t.TempDir(), "", "completion", sh)
		if r.code != 0 || !strings.Contains(r.stdout, "kuasar") || r.stderr != "" {
			t.Errorf("completion %s: exit code %d, %d bytes, stderr %q", sh, r.code, len(r.stdout), r.stderr)
		}
		if sh == "bash" {
			if _, err := exec.LookPath("bash"); err == nil {
				cmd := exec.Command("bash", "-n")
				cmd.Stdin = strings.NewReader(r.stdout)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				if err := cmd.Run(); err != nil {
					t.Errorf("bash -n on the bash completion: %v: %s", err, stderr.String())
				}
			}
		}
	}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "run", "--isolation", ""}, []string{"auto", "wasm", "vm", "quark"}},
		{[]string{"__complete", "version", "--format", ""}, []string{"text", "json"}},
		{[]string{"__complete", "im"}, []string{"image", "images"}},
		{[]string{"__complete", "image", ""}, []string{"build", "inspect", "ls", "prune", "push", "rm", "tag"}},
	}
	for _, tc := range tests {
		r := runInProcess(t, t.TempDir(), "", tc.args...)
		var got []string
		for _, l := range strings.Split(r.stdout, "\n") {
			if l != "" && !strings.HasPrefix(l, ":") {
				name, _, _ := strings.Cut(l, "\t")
				got = append(got, name)
			}
		}
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("kuasar %s = %q, want %q", strings.Join(tc.args, " "), got, tc.want)
		}
	}
}

// TestBridge checks that a command added with register becomes a
// subcommand that gets its arguments untouched, help flags included.
func TestBridge(t *testing.T) {
	var got []string
	register("test-bridge", "a bridged command", func(_ context.Context, env *cliEnv, args []string) int {
		got = args
		return 7
	})
	defer delete(commands, "test-bridge")
	args := []string{"--x", "-h", "y", "--", "--help"}
	r := runInProcess(t, t.TempDir(), "", append([]string{"test-bridge"}, args...)...)
	if r.code != 7 || strings.Join(got, " ") != strings.Join(args, " ") {
		t.Errorf("bridged command: exit code %d, args %q; want 7 and %q", r.code, got, args)
	}
	if h := runInProcess(t, t.TempDir(), "", "--help"); !strings.Contains(h.stdout, "test-bridge") {
		t.Errorf("root help does not list the bridged command:\n%s", h.stdout)
	}
}

// TestBridgeParseFlags checks parseFlags, the helper of bridged commands
// written with Go's flag package: help on stdout with exit 0, a bad flag
// on stderr with exit 2.
func TestBridgeParseFlags(t *testing.T) {
	register("test-flags", "a bridged command with Go flags", func(_ context.Context, env *cliEnv, args []string) int {
		fs := flag.NewFlagSet("test-flags", flag.ContinueOnError)
		n := fs.Int("n", 1, "a number")
		fs.Usage = func() { fmt.Fprintln(fs.Output(), "usage: kuasar test-flags [-n N]") }
		if code, ok := parseFlags(fs, env, args); !ok {
			return code
		}
		fmt.Fprintln(env.stdout, *n)
		return 0
	})
	defer delete(commands, "test-flags")
	for _, tc := range []struct {
		args             []string
		code             int
		stdout, inStderr string
	}{
		{[]string{"-n", "3"}, 0, "3\n", ""},
		{[]string{"-h"}, 0, "usage: kuasar test-flags [-n N]\n", ""},
		{[]string{"--help"}, 0, "usage: kuasar test-flags [-n N]\n", ""},
		{[]string{"-x"}, exitUsage, "", "flag provided but not defined: -x"},
	} {
		r := runInProcess(t, t.TempDir(), "", append([]string{"test-flags"}, tc.args...)...)
		if r.code != tc.code || r.stdout != tc.stdout || !strings.Contains(r.stderr, tc.inStderr) || (tc.inStderr == "" && r.stderr != "") {
			t.Errorf("test-flags %v: exit %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, r.code, r.stdout, r.stderr, tc.code, tc.stdout, tc.inStderr)
		}
	}
}
