package runspec

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestOpenModuleID: the FileID changes with the file's content (size),
// its modification time and its replacement by another file, and not
// otherwise; ReadAll reads the content.
func TestOpenModuleID(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "m.wasm")
	id := func() FileID {
		t.Helper()
		f, err := OpenModule(root, p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b, err := f.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadFile(p)
		if string(b) != string(want) {
			t.Fatalf("ReadAll %q, want %q", b, want)
		}
		return f.ID()
	}
	if err := os.WriteFile(p, []byte("\x00asm one"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := id()
	if b := id(); b != a {
		t.Fatalf("unchanged file: %+v then %+v", a, b)
	}
	steps := []struct {
		name   string
		change func() error
	}{
		{"content of another size", func() error { return os.WriteFile(p, []byte("\x00asm three"), 0o644) }},
		{"mtime", func() error {
			old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
			return os.Chtimes(p, old, old)
		}},
		{"another file renamed over it", func() error {
			q := filepath.Join(root, "new")
			if err := os.WriteFile(q, []byte("\x00asm three"), 0o644); err != nil {
				return err
			}
			return os.Rename(q, p)
		}},
	}
	prev := a
	for _, s := range steps {
		if err := s.change(); err != nil {
			t.Fatal(err)
		}
		if now := id(); now == prev {
			t.Errorf("%s: FileID unchanged (%+v)", s.name, now)
		} else {
			prev = now
		}
	}
}

// TestFileIDChangedBefore: only a file whose ctime and mtime both lie
// before the limit may key a cache.
func TestFileIDChangedBefore(t *testing.T) {
	now := time.Unix(1000, 0)
	old, recent := now.Add(-2*time.Second).UnixNano(), now.Add(-time.Millisecond).UnixNano()
	for _, tc := range []struct {
		mtime, ctime int64
		want         bool
	}{
		{old, old, true},
		{old, recent, false},
		{recent, old, false},
		{recent, recent, false},
	} {
		id := FileID{Mtime: tc.mtime, Ctime: tc.ctime}
		if got := id.ChangedBefore(now.Add(-time.Second)); got != tc.want {
			t.Errorf("mtime %d ctime %d: %v, want %v", tc.mtime, tc.ctime, got, tc.want)
		}
	}
}
