package template

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// fakeBuild writes a memory file of the key's size and a state file, and
// counts its calls.
func fakeBuild(calls *atomic.Int32) BuildFunc {
	return func(ctx context.Context, key Key, mem, state string) error {
		calls.Add(1)
		if err := os.Truncate(mem, int64(key.MemoryMB)<<20); err != nil {
			return err
		}
		return os.WriteFile(state, []byte("device state of "+key.Cmdline), 0o600)
	}
}

func testKey(t *testing.T) Key {
	k := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(k, []byte("kernel"), 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := Identify(k)
	if err != nil {
		t.Fatal(err)
	}
	return Key{VMM: "qemu", Kernel: id, Cmdline: "quiet", VCPUs: 1, MemoryMB: 2}
}

// entries lists what the store's directories hold.
func entries(t *testing.T, dirs ...string) []string {
	var out []string
	for _, d := range dirs {
		es, _ := os.ReadDir(d)
		for _, e := range es {
			if filepath.Ext(e.Name()) != ".lock" {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

func TestGetBuildsOnceUnderConcurrency(t *testing.T) {
	s := NewStore(t.TempDir(), t.TempDir())
	key := testKey(t)
	var calls atomic.Int32
	var wg sync.WaitGroup
	tpls := make([]*Template, 8)
	errs := make([]error, 8)
	for i := range tpls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tpls[i], errs[i] = s.Get(context.Background(), key, fakeBuild(&calls))
		}()
	}
	wg.Wait()
	for i := range tpls {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if tpls[i].MemPath != tpls[0].MemPath || tpls[i].StatePath != tpls[0].StatePath {
			t.Fatalf("callers got different templates: %+v %+v", tpls[i], tpls[0])
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("built %d times, want once", n)
	}
	if fi, err := os.Stat(tpls[0].MemPath); err != nil || fi.Size() != 2<<20 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("memory file %v %v", fi, err)
	}
}

func TestRebuild(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, tpl *Template, key *Key)
		builds int32
	}{
		{"unchanged", func(*testing.T, *Template, *Key) {}, 1},
		{"kernel rewritten", func(t *testing.T, _ *Template, key *Key) {
			if err := os.WriteFile(key.Kernel.Path, []byte("another kernel"), 0o600); err != nil {
				t.Fatal(err)
			}
			id, err := Identify(key.Kernel.Path)
			if err != nil {
				t.Fatal(err)
			}
			key.Kernel = id
		}, 2},
		{"other memory size", func(_ *testing.T, _ *Template, key *Key) { key.MemoryMB = 3 }, 2},
		{"state truncated", func(t *testing.T, tpl *Template, _ *Key) { os.Truncate(tpl.StatePath, 3) }, 2},
		{"state emptied", func(t *testing.T, tpl *Template, _ *Key) { os.Truncate(tpl.StatePath, 0) }, 2},
		{"memory removed", func(t *testing.T, tpl *Template, _ *Key) { os.Remove(tpl.MemPath) }, 2},
		{"memory replaced", func(t *testing.T, tpl *Template, _ *Key) {
			os.Remove(tpl.MemPath)
			os.WriteFile(tpl.MemPath, make([]byte, 2<<20), 0o600)
		}, 2},
		{"meta corrupt", func(t *testing.T, tpl *Template, _ *Key) {
			os.WriteFile(filepath.Join(tpl.Dir, MetaName), []byte("{"), 0o600)
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, mem := t.TempDir(), t.TempDir()
			s := NewStore(dir, mem)
			key := testKey(t)
			var calls atomic.Int32
			tpl, err := s.Get(context.Background(), key, fakeBuild(&calls))
			if err != nil {
				t.Fatal(err)
			}
			tc.change(t, tpl, &key)
			tpl2, err := s.Get(context.Background(), key, fakeBuild(&calls))
			if err != nil {
				t.Fatal(err)
			}
			if n := calls.Load(); n != tc.builds {
				t.Fatalf("built %d times, want %d", n, tc.builds)
			}
			if _, err := s.Lookup(tpl2.Key); err != nil {
				t.Fatalf("rebuilt template unusable: %v", err)
			}
			if err := s.RemoveAll(context.Background()); err != nil {
				t.Fatal(err)
			}
			if left := entries(t, dir, mem); len(left) != 0 {
				t.Fatalf("left after RemoveAll: %v", left)
			}
		})
	}
}

// TestPruneStale: building a template for a new kernel removes the one
// for the kernel it replaced, memory file included.
func TestPruneStale(t *testing.T) {
	dir, mem := t.TempDir(), t.TempDir()
	s := NewStore(dir, mem)
	key := testKey(t)
	var calls atomic.Int32
	old, err := s.Get(context.Background(), key, fakeBuild(&calls))
	if err != nil {
		t.Fatal(err)
	}
	other := key
	other.Cmdline = "another command line, same files"
	if _, err := s.Get(context.Background(), other, fakeBuild(&calls)); err != nil {
		t.Fatal(err)
	}
	if n := len(s.List()); n != 2 {
		t.Fatalf("%d templates, want 2 (both current)", n)
	}
	if err := os.WriteFile(key.Kernel.Path, []byte("new kernel"), 0o600); err != nil {
		t.Fatal(err)
	}
	fresh := key
	if fresh.Kernel, err = Identify(key.Kernel.Path); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(context.Background(), fresh, fakeBuild(&calls)); err != nil {
		t.Fatal(err)
	}
	got := s.List()
	if len(got) != 1 || got[0].Key.Digest() != fresh.Digest() {
		t.Fatalf("templates after the kernel changed: %+v, want only the new one", got)
	}
	if _, err := os.Stat(old.MemPath); !os.IsNotExist(err) {
		t.Fatalf("stale memory file %s left: %v", old.MemPath, err)
	}
}

// TestLeftoversOfADeadBuilder: what a builder killed mid-way left is
// removed by the next build of the same key.
func TestLeftoversOfADeadBuilder(t *testing.T) {
	dir, mem := t.TempDir(), t.TempDir()
	s := NewStore(dir, mem)
	key := testKey(t)
	died := errors.New("killed")
	var leftDir, leftMem string
	_, err := s.Get(context.Background(), key, func(ctx context.Context, key Key, m, state string) error {
		// Keep copies of the temporary files as a killed process would.
		leftDir, leftMem = filepath.Dir(state)+"-copy", m+"-copy"
		os.Mkdir(leftDir, 0o700)
		os.WriteFile(leftMem, nil, 0o600)
		return died
	})
	if !errors.Is(err, died) {
		t.Fatal(err)
	}
	// Name them as a dead builder's: .tmp-<digest>-N and .tmp-.tmp-<digest>-N.mem.
	d := key.Digest()
	dead := filepath.Join(dir, tmpPrefix+d+"-999")
	deadMem := filepath.Join(mem, tmpPrefix+tmpPrefix+d+"-999"+memSuffix)
	if err := os.Rename(leftDir, dead); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(leftMem, deadMem); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	if _, err := s.Get(context.Background(), key, fakeBuild(&calls)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dead, deadMem} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("leftover %s still there: %v", p, err)
		}
	}
}

func TestFailedBuildLeavesNothing(t *testing.T) {
	dir, mem := t.TempDir(), t.TempDir()
	s := NewStore(dir, mem)
	key := testKey(t)
	boom := errors.New("boom")
	for name, build := range map[string]BuildFunc{
		"error": func(ctx context.Context, key Key, mem, state string) error {
			os.Truncate(mem, 1<<20)
			return boom
		},
		"no state": func(ctx context.Context, key Key, mem, state string) error {
			return os.Truncate(mem, int64(key.MemoryMB)<<20)
		},
		"short memory": func(ctx context.Context, key Key, mem, state string) error {
			os.WriteFile(state, []byte("x"), 0o600)
			return os.Truncate(mem, 1<<20)
		},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := s.Get(context.Background(), key, build); err == nil {
				t.Fatal("Get succeeded with a failing build")
			}
			if left := entries(t, dir, mem); len(left) != 0 {
				t.Fatalf("left after a failed build: %v", left)
			}
			if _, err := s.Lookup(key); err == nil {
				t.Fatal("a failed build is visible")
			}
		})
	}
}

func TestInvalidateKeepsARebuiltTemplate(t *testing.T) {
	s := NewStore(t.TempDir(), "")
	key := testKey(t)
	var calls atomic.Int32
	old, err := s.Get(context.Background(), key, fakeBuild(&calls))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Invalidate(context.Background(), old, errors.New("restore failed")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(key); err == nil {
		t.Fatal("invalidated template still usable")
	}
	if _, err := s.Get(context.Background(), key, fakeBuild(&calls)); err != nil {
		t.Fatal(err)
	}
	// A second report about the old one must not remove the new one.
	if err := s.Invalidate(context.Background(), old, errors.New("late report")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(key); err != nil {
		t.Fatalf("rebuilt template removed by a stale report: %v", err)
	}
}
