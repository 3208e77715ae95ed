package fsroot

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkOpen compares opening a file three directories deep through a
// Root (one openat2) with os.Open of the joined path (one openat), the
// unconfined baseline; BenchmarkMkdirRmdir does the same for a pair of
// parent-resolving operations.
func BenchmarkOpen(b *testing.B) {
	dir := b.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "a/b/c"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a/b/c/f"), nil, 0o644); err != nil {
		b.Fatal(err)
	}
	r, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.Run("fsroot", func(b *testing.B) {
		for b.Loop() {
			f, err := r.Open("a/b/c/f")
			if err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
	b.Run("os", func(b *testing.B) {
		p := filepath.Join(dir, "a/b/c/f")
		for b.Loop() {
			f, err := os.Open(p)
			if err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
}

func BenchmarkMkdirRmdir(b *testing.B) {
	dir := b.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "a/b"), 0o755); err != nil {
		b.Fatal(err)
	}
	r, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.Run("fsroot", func(b *testing.B) {
		for b.Loop() {
			if err := r.Mkdir("a/b/x", 0o755); err != nil {
				b.Fatal(err)
			}
			if err := r.Rmdir("a/b/x"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("os", func(b *testing.B) {
		p := filepath.Join(dir, "a/b/x")
		for b.Loop() {
			if err := unix.Mkdir(p, 0o755); err != nil {
				b.Fatal(err)
			}
			if err := unix.Rmdir(p); err != nil {
				b.Fatal(err)
			}
		}
	})
}
