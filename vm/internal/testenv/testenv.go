// Package testenv gives the VM packages' tests real guest artifacts: the
// Debian kernel and initramfs images built (and cached) by vm/guest, and
// the QEMU binary. A missing tool fails the test with a hint, as the team
// rules require; only a non-root run skips.
package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/kuasar-go/kuasar/vm/guest"
)

// RequireRoot skips the test when not running as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("VM tests need root")
	}
}

// QEMU returns the QEMU binary path or fails the test. Under -short
// (make test-short: unit tests only) it skips the test: its caller boots
// a VM.
func QEMU(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM under QEMU; -short runs unit tests only")
	}
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 not found (apt-get install qemu-system-x86; run make deps): %v", err)
	}
	return p
}

// SourceDir is the kuasar module root.
func SourceDir() string {
	_, f, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(f), "..", "..", "..")
}

// CacheDir is where tests keep guest builds.
func CacheDir() string {
	if d := os.Getenv("KUASAR_TOOLS"); d != "" {
		return filepath.Join(d, "guest")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "kuasar-tools", "guest")
}

var mu sync.Mutex

// Build builds (or reuses) a guest with opts, failing the test on error.
//
// Under -short (make test-short: unit tests only) it skips the test: a
// guest build downloads and unpacks Debian packages.
func Build(t testing.TB, opts guest.Options) guest.Artifacts {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a guest from Debian packages; -short runs unit tests only")
	}
	mu.Lock()
	defer mu.Unlock()
	if opts.BaseDir == "" {
		opts.BaseDir = filepath.Join(CacheDir(), "builds")
	}
	if opts.CacheDir == "" {
		opts.CacheDir = CacheDir()
	}
	if opts.SourceDir == "" {
		opts.SourceDir = SourceDir()
	}
	a, err := guest.Build(context.Background(), opts)
	if err == nil && !a.Cached {
		// Every agent change makes a new ~80 MB version: keep a few.
		_ = guest.Prune(opts.BaseDir, 8, a.Dir)
	}
	if err != nil {
		t.Fatalf("building guest artifacts (needs apt access to Debian's linux-image-amd64, xz-utils, dpkg-deb; run make deps / make guest): %v", err)
	}
	return a
}

// BusyboxInit builds a guest whose /init is a busybox shell script, for
// tests that do not need the agent.
func BusyboxInit(t testing.TB, script string) guest.Artifacts {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static not found (apt-get install busybox-static; run make deps): %v", err)
	}
	return Build(t, guest.Options{
		Init:    []byte("#!/bin/busybox sh\n" + script + "\n"),
		Files:   map[string][]byte{"bin/busybox": bb},
		Modules: []string{},
	})
}
