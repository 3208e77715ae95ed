package atomicfile

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

func TestWriteFile(t *testing.T) {
	for _, durable := range []bool{false, true} {
		dir := t.TempDir()
		p := filepath.Join(dir, "state.json")
		if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := WriteFile(p, []byte("new"), 0o600, durable); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != "new" {
			t.Fatalf("durable=%v: content %q, %v", durable, b, err)
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
			t.Errorf("durable=%v: mode %#o, want 0600", durable, fi.Mode().Perm())
		}
		if left, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(left) != 0 {
			t.Errorf("durable=%v: temporary files left: %v", durable, left)
		}
	}
}

func TestWriteFileFailureKeepsOldContent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "target")
	// A directory at path makes the final rename fail.
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "inside"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("x"), 0o600, true); err == nil {
		t.Fatal("rename over a non-empty directory succeeded")
	}
	if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
		t.Fatalf("target changed: %v %v", fi, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestWriteFileModeDespiteUmask: the file gets perm even when the umask at
// the time of the write would clear some of its bits.
func TestWriteFileModeDespiteUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	for _, perm := range []os.FileMode{0o600, 0o644, 0o640, 0o400} {
		p := filepath.Join(t.TempDir(), "f")
		if err := WriteFile(p, []byte("x"), perm, false); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != perm {
			t.Errorf("perm %#o: got %v, %v", perm, fi.Mode().Perm(), err)
		}
	}
}

// TestWriteFileReplacesMany: repeated writes leave the last content and no
// temporary file, whatever names earlier writes used.
func TestWriteFileReplacesMany(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "r.json")
	for i := range 50 {
		if err := WriteFile(p, []byte(strconv.Itoa(i)), 0o600, false); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(p); string(b) != "49" {
		t.Fatalf("content %q, want 49", b)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestWriteFileLeftoverTempName: a temporary file an earlier process left
// under the name the next write would use does not make it fail.
func TestWriteFileLeftoverTempName(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "r.json")
	next := ".tmp-r.json-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(seq.Load()+1, 36)
	if err := os.WriteFile(filepath.Join(dir, next), []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new"), 0o600, false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "new" {
		t.Fatalf("content %q", b)
	}
}

// TestWriteFileRelative: a path without a directory is written in the
// working directory, its temporary file beside it.
func TestWriteFileRelative(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := WriteFile("rel.json", []byte("x"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(".")
	if len(ents) != 1 || ents[0].Name() != "rel.json" {
		t.Fatalf("directory holds %v, want only rel.json", ents)
	}
}
