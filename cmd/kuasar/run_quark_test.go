package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

// TestRunQuarkChecksTheHost: without a usable Quark, `kuasar run
// --isolation quark` says what is missing and how to fix it.
func TestRunQuarkChecksTheHost(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kuasar.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("[quark]\nbinary = %q\n", filepath.Join(dir, "no-quark"))), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUASAR_CONFIG", cfg)
	archive := busyboxArchive(t)
	var stderr bytes.Buffer
	env := &cliEnv{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &stderr, stateDir: t.TempDir()}
	if code := runCLI(context.Background(), env, []string{"run", "--isolation", "quark", archive}); code != exitKuasarError {
		t.Fatalf("exit code %d, want %d: %s", code, exitKuasarError, stderr.String())
	}
	for _, want := range []string{"quark binary", "install Quark", "[quark]"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q does not say %q", stderr.String(), want)
		}
	}
}

// TestRunInQuarkStandin runs a busybox image with `kuasar run --isolation
// quark` on the STAND-IN quark (quark/internal/standin: Quark cannot be
// obtained here; the stand-in honours its sandbox command line and runs
// the container with runc): stdin, output and exit code come back and
// nothing is left behind.
func TestRunInQuarkStandin(t *testing.T) {
	if testing.Short() {
		t.Skip("runs containers with runc")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (mounts, runc)")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("the stand-in quark runs containers with runc: apt-get install runc")
	}
	dir := testenv.TempDir(t)
	bin := filepath.Join(dir, "quark")
	build := exec.Command("go", "build", "-o", bin, "./quark/internal/standin")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the stand-in quark: %v\n%s", err, out)
	}
	t.Logf("running on the STAND-IN quark %s (not Quark)", bin)
	qcfg := filepath.Join(dir, "quark.json")
	if err := os.WriteFile(qcfg, []byte(`{"Sandboxed": true, "ShimMode": false}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "kuasar.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("[quark]\nbinary = %q\nconfig_file = %q\n", bin, qcfg)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUASAR_CONFIG", cfg)
	archive := busyboxArchive(t)
	state, err := os.MkdirTemp("", "kq") // short: the task socket lives below it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	var stdout, stderr bytes.Buffer
	env := &cliEnv{stdin: strings.NewReader("piped\n"), stdout: &stdout, stderr: &stderr, stateDir: state}
	code := runCLI(context.Background(), env, []string{"run", "--isolation", "quark", archive, "--", "cat; echo hi from $(hostname); exit 3"})
	if code != 3 {
		t.Fatalf("exit code %d, want 3\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
	}
	if got := stdout.String(); got != "piped\nhi from kuasar\n" {
		t.Errorf("stdout %q", got)
	}
	if left, _ := filepath.Glob(filepath.Join(state, "run", "*")); len(left) != 0 {
		t.Errorf("run state left behind: %v", left)
	}
	if ms := testenv.MountsUnder(state); len(ms) != 0 {
		t.Errorf("mounts left behind: %v", ms)
	}
}

// busyboxArchive writes an OCI archive of busybox with entrypoint sh -c.
func busyboxArchive(t *testing.T) string {
	t.Helper()
	files, err := images.BusyboxFiles("/bin/busybox", "sh", "cat", "echo", "hostname")
	if err != nil {
		t.Skipf("%v (run make deps)", err)
	}
	img, err := images.BuildLinuxImage(context.Background(), files, ocispec.ImageConfig{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo default"}}, ocispec.Platform{})
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "busybox.tar")
	if err := img.WriteArchiveFile(archive, "docker.io/library/busybox-quark:test"); err != nil {
		t.Fatal(err)
	}
	return archive
}
