package template

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkSealedCopy measures what a process pays on its first restore
// from a template: copying a 256 MiB memory file holding 100 MiB of data
// (in 1 MiB pieces, as a booted guest leaves it) into a sealed memfd.
// The file is on /dev/shm when that is a tmpfs, as the store keeps it.
func BenchmarkSealedCopy(b *testing.B) {
	dir := DefaultMemDir("kuasar-bench")
	if dir == "" {
		dir = b.TempDir()
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "mem")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Truncate(256 << 20); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for off := int64(0); off < 200<<20; off += 2 << 20 {
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	f.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m, err := SealedCopy(p, "bench")
		if err != nil {
			b.Fatal(err)
		}
		m.Close()
	}
}
