package template

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// memDirForTest is a directory on the file system the store keeps memory
// files on: /dev/shm when that is a tmpfs, else a temporary directory.
func memDirForTest(t *testing.T) string {
	t.Helper()
	d := DefaultMemDir("kuasar-test-" + filepath.Base(t.TempDir()))
	if d == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// allocated is how many bytes of f's contents are stored (not holes).
func allocated(t *testing.T, f *os.File) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// page is a page of byte b (0: a zero page written as data).
func page(b byte) []byte { return bytes.Repeat([]byte{b}, pageSize) }

// TestZeroPagesAndSealedCopy writes memory files whose data regions mix
// zero pages with pages of data, punches the zero pages out and copies
// the result into a sealed memfd: every step must read exactly as the
// original, the punched file and the copy must hold only the non-zero
// pages, and the holes must stay holes.
func TestZeroPagesAndSealedCopy(t *testing.T) {
	const size = 64 * pageSize
	for _, tc := range []struct {
		name string
		// pages maps a page index to its fill byte; other pages are holes.
		pages map[int]byte
	}{
		{"no data", map[int]byte{}},
		{"data only", map[int]byte{0: 1, 1: 2, 63: 3}},
		{"zero pages only", map[int]byte{3: 0, 4: 0, 5: 0}},
		{"zeros between data", map[int]byte{0: 7, 1: 0, 2: 0, 3: 9, 10: 0, 11: 5, 62: 0, 63: 0}},
		{"runs ending a region", map[int]byte{20: 4, 21: 0, 22: 0, 40: 0, 41: 0, 42: 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(memDirForTest(t), "mem")
			f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(size); err != nil {
				t.Fatal(err)
			}
			var nonZero int64
			for i, b := range tc.pages {
				if _, err := f.WriteAt(page(b), int64(i)*pageSize); err != nil {
					t.Fatal(err)
				}
				if b != 0 {
					nonZero += pageSize
				}
			}
			want, err := io.ReadAll(io.NewSectionReader(f, 0, size))
			if err != nil {
				t.Fatal(err)
			}
			freed, err := PunchZeroPages(p)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(tc.pages))*pageSize-nonZero != freed {
				t.Errorf("freed %d bytes, want %d (the zero pages)", freed, int64(len(tc.pages))*pageSize-nonZero)
			}
			got, err := io.ReadAll(io.NewSectionReader(f, 0, size))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("after punching, the file reads differently (%v)", err)
			}
			if a := allocated(t, f); a != nonZero {
				t.Errorf("after punching, %d bytes allocated, want %d (the non-zero pages)", a, nonZero)
			}
			m, err := SealedCopy(p, "test-holes")
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			got, err = io.ReadAll(io.NewSectionReader(m, 0, size))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("the sealed copy reads differently (%v)", err)
			}
			if a := allocated(t, m); a != nonZero {
				t.Errorf("the sealed copy holds %d bytes, want %d: holes were filled or data lost", a, nonZero)
			}
		})
	}
}

// TestPunchZeroPagesRefusesNonRegular: a directory or a symlink in place
// of the memory file is refused, never followed.
func TestPunchZeroPagesRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, make([]byte, pageSize), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, link} {
		if _, err := PunchZeroPages(p); err == nil {
			t.Errorf("PunchZeroPages(%s) succeeded, want a refusal", p)
		}
	}
	if fi, err := os.Stat(target); err != nil || fi.Size() != pageSize {
		t.Fatalf("the symlink's target changed: %v %v", fi, err)
	}
}
