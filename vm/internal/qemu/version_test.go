package qemu

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/template"
)

// TestKnowVersion: a version a template recorded for a binary identity is
// used by TemplateKey without running the binary; another binary (or the
// same path rewritten) is asked.
func TestKnowVersion(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "qemu")
	// Fails if it is run: the version must come from KnowVersion.
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := New(vm.Spec{ID: "v", StateDir: dir, Config: vm.Config{Path: fake, Kernel: img, Initramfs: img, Accel: "tcg"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.TemplateKey(t.Context()); err == nil {
		t.Fatal("TemplateKey with a binary that fails -version and no known version succeeded")
	}
	id, err := template.Identify(fake)
	if err != nil {
		t.Fatal(err)
	}
	KnowVersion(id, "QEMU emulator version 0.0.test")
	k, err := v.TemplateKey(t.Context())
	if err != nil || k.Version != "QEMU emulator version 0.0.test" {
		t.Fatalf("TemplateKey with a known version: %+v %v", k.Version, err)
	}
	// Rewritten (another size, so another identity whatever the mtime
	// granularity): asked again, and failing.
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nexit 22\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := v.TemplateKey(t.Context()); err == nil {
		t.Fatal("a rewritten binary kept the version known for the old one")
	}
}
