package template

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestSweepOrphanMemory: opening a store removes the memory of stores
// whose directory was deleted (or deleted and recreated under the same
// path), and leaves live stores' memory alone.
func TestSweepOrphanMemory(t *testing.T) {
	ctx := context.Background()
	states, memRoot := t.TempDir(), t.TempDir()
	key := testKey(t)
	var calls atomic.Int32
	// newStore opens a store named name with its memory directory in
	// memRoot, as vmbackend lays stores out on /dev/shm.
	newStore := func(name string) *Store {
		h := sha256.Sum256([]byte(name))
		return NewStore(filepath.Join(states, name), filepath.Join(memRoot, hex.EncodeToString(h[:8])))
	}
	build := func(s *Store) *Template {
		t.Helper()
		tpl, err := s.Get(ctx, key, fakeBuild(&calls))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tpl.Close() })
		if _, err := os.Stat(tpl.MemPath); err != nil {
			t.Fatalf("no memory file placed: %v", err)
		}
		return tpl
	}
	gone, live, again := newStore("a"), newStore("b"), newStore("c")
	goneTpl, liveTpl, againTpl := build(gone), build(live), build(again)

	// a's directory is deleted; c's is deleted and made anew.
	if err := os.RemoveAll(gone.Dir()); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(again.Dir()); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(again.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}

	// Another store opens.
	opener := newStore("d")
	if err := os.MkdirAll(opener.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := opener.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		tpl    *Template
		remain bool
	}{
		{"deleted store", goneTpl, false},
		{"recreated store", againTpl, false},
		{"live store", liveTpl, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			memDir := filepath.Dir(tc.tpl.MemPath)
			for _, p := range []string{tc.tpl.MemPath, memDir, memDir + ownerSuffix} {
				_, err := os.Lstat(p)
				if tc.remain && err != nil {
					t.Errorf("%s of a live store was removed: %v", p, err)
				}
				if !tc.remain && !os.IsNotExist(err) {
					t.Errorf("%s of a store whose directory is gone is left (%v)", p, err)
				}
			}
		})
	}
	if _, err := live.Lookup(key); err != nil {
		t.Fatalf("live store's template unusable after the sweep: %v", err)
	}
	// The recreated directory's store has no template: it builds anew.
	reopened := NewStore(again.Dir(), filepath.Dir(againTpl.MemPath))
	if _, err := reopened.Lookup(key); err == nil {
		t.Fatal("a recreated store directory adopted the former one's template")
	}
}

// TestClaimDropsFormerOwnersMemory: a store whose directory was deleted
// and recreated does not adopt the memory the former directory left in
// its memory directory, whether it opens (Reap) or builds straight away.
func TestClaimDropsFormerOwnersMemory(t *testing.T) {
	for _, reap := range []bool{true, false} {
		t.Run(map[bool]string{true: "reap", false: "get"}[reap], func(t *testing.T) {
			ctx := context.Background()
			dir, mem := filepath.Join(t.TempDir(), "s"), filepath.Join(t.TempDir(), "0123456789abcdef")
			key, other := testKey(t), testKey(t)
			other.Cmdline = "other"
			var calls atomic.Int32
			s := NewStore(dir, mem)
			var mems []string
			for _, k := range []Key{key, other} {
				tpl, err := s.Get(ctx, k, fakeBuild(&calls))
				if err != nil {
					t.Fatal(err)
				}
				tpl.Close()
				mems = append(mems, tpl.MemPath)
			}
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			s = NewStore(dir, mem)
			if reap {
				if _, err := s.Reap(ctx); err != nil {
					t.Fatal(err)
				}
			}
			tpl, err := s.Get(ctx, key, fakeBuild(&calls))
			if err != nil {
				t.Fatal(err)
			}
			tpl.Close()
			if n := calls.Load(); n != 3 {
				t.Errorf("built %d times, want 3: the recreated store used the former one's template", n)
			}
			if _, err := os.Stat(mems[1]); !os.IsNotExist(err) {
				t.Errorf("former directory's memory %s left after the new store opened (%v)", mems[1], err)
			}
			if o, err := readOwner(mem); err != nil || !o.alive() {
				t.Errorf("the new store is not the recorded owner: %+v, %v", o, err)
			}
			// RemoveAll takes the memory directory and its record.
			if err := s.RemoveAll(ctx); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{mem, mem + ownerSuffix} {
				if _, err := os.Lstat(p); !os.IsNotExist(err) {
					t.Errorf("%s left after RemoveAll (%v)", p, err)
				}
			}
		})
	}
}

// TestSweepLegacyMemory: a memory directory from before owner records is
// removed once nothing touched it for legacyGrace, kept while it is
// recent (an older binary's store may be using it), and a directory that
// is not a memory directory is never touched.
func TestSweepLegacyMemory(t *testing.T) {
	root := t.TempDir()
	old := time.Now().Add(-2 * legacyGrace)
	mk := func(name string, files []string, aged bool) string {
		d := filepath.Join(root, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			p := filepath.Join(d, f)
			if err := os.WriteFile(p, []byte("guest memory"), 0o600); err != nil {
				t.Fatal(err)
			}
			if aged {
				os.Chtimes(p, old, old)
			}
		}
		if aged {
			os.Chtimes(d, old, old)
		}
		return d
	}
	stale := mk("00112233445566aa", []string{"f9a95415a62e9de36aae195239fcc0db.mem"}, true)
	staleEmpty := mk("00112233445566bb", nil, true)
	recent := mk("00112233445566cc", []string{"f9a95415a62e9de36aae195239fcc0db.mem"}, false)
	notMem := mk("00112233445566dd", []string{"notes.txt"}, true)
	otherName := mk("pictures", []string{"a.mem"}, true)

	s := NewStore(filepath.Join(t.TempDir(), "state"), filepath.Join(root, "ffeeddccbbaa9988"))
	n, err := s.SweepOrphans(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir    string
		remain bool
	}{{stale, false}, {staleEmpty, false}, {recent, true}, {notMem, true}, {otherName, true}} {
		if _, err := os.Lstat(tc.dir); (err == nil) != tc.remain {
			t.Errorf("%s: exists=%v, want %v", filepath.Base(tc.dir), err == nil, tc.remain)
		}
	}
	if n != 2 {
		t.Errorf("swept %d directories, want 2", n)
	}
}
