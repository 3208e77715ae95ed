package fsroot

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The rename race: an attacker with write access inside the Root loops
//
//	rename(dir, d); rename(d, dir); rename(link, d); rename(d, link)
//
// where link points outside (relatively, "../host", or absolutely, at the
// host path), while every kind of operation works on "d/<name>". A resolver
// that checks "d" and then reopens "d/<name>" by name follows the link into
// host/ now and then; Root never may.
const (
	raceAttempts = 20000
	raceDeadline = 20 * time.Second
	hostSecret   = "HOST-SECRET-5f1d"
)

// raceShortEnough is how many attempts must have found d as a directory,
// and how many must not have, before a -short run (make test-short) stops
// early: the race was exercised both ways, though not long enough to hunt
// for a rare leak. Under load the swaps come slowly and the run goes on, up
// to raceAttempts.
const raceShortEnough = 50

// raceFixture is base/root (the Root) and base/host (outside), with the
// same names in root/dir and in host so that a leak is recognisable.
type raceFixture struct {
	root, host string
	r          *Root
	secret     unix.Stat_t // host/shadow before the race
	hostNames  []string
}

func newRaceFixture(t *testing.T, linkTarget func(host string) string) *raceFixture {
	t.Helper()
	base := t.TempDir()
	f := &raceFixture{root: filepath.Join(base, "root"), host: filepath.Join(base, "host")}
	dir := filepath.Join(f.root, "dir")
	for _, d := range []string{f.root, f.host, dir, filepath.Join(f.host, "victimdir"), filepath.Join(dir, "victimdir")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, c string) {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(f.host, "shadow"), hostSecret)
	write(filepath.Join(f.host, "victim"), hostSecret)
	write(filepath.Join(f.host, "host-only"), hostSecret)
	write(filepath.Join(dir, "shadow"), "inside")
	write(filepath.Join(dir, "victim"), "inside")
	if err := os.Symlink("OUTSIDE-LINK", filepath.Join(f.host, "lnk")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("inside-link", filepath.Join(dir, "lnk")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(linkTarget(f.host), filepath.Join(f.root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(f.host, "shadow"), &f.secret); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(f.host)
	for _, e := range entries {
		f.hostNames = append(f.hostNames, e.Name())
	}
	r, err := Open(f.root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	f.r = r
	return f
}

// swap runs the attacker's renames until stop is closed.
func (f *raceFixture) swap(stop <-chan struct{}, swaps *atomic.Int64) {
	dir, d, link := filepath.Join(f.root, "dir"), filepath.Join(f.root, "d"), filepath.Join(f.root, "link")
	for {
		select {
		case <-stop:
			return
		default:
		}
		os.Rename(dir, d)
		os.Rename(d, dir)
		os.Rename(link, d)
		os.Rename(d, link)
		swaps.Add(1)
	}
}

// untouched fails the test if anything outside the root changed.
func (f *raceFixture) untouched(t *testing.T) {
	t.Helper()
	entries, _ := os.ReadDir(f.host)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, f.hostNames) {
		t.Errorf("outside the root: names %v, want %v", names, f.hostNames)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(f.host, "shadow"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mtim != f.secret.Mtim || st.Atim != f.secret.Atim || st.Mode != f.secret.Mode || st.Nlink != f.secret.Nlink || st.Size != f.secret.Size {
		t.Errorf("the host secret changed: %+v -> %+v", f.secret, st)
	}
	for _, n := range []string{"shadow", "victim", "host-only"} {
		if b, err := os.ReadFile(filepath.Join(f.host, n)); err != nil || string(b) != hostSecret {
			t.Errorf("host/%s = %q, %v", n, b, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(f.host, "victimdir")); err != nil || !fi.IsDir() {
		t.Errorf("host/victimdir: %v", err)
	}
}

// raceOp is one kind of operation on the raced path. It returns whether it
// acted on something (to prove the race was exercised) and an error message
// when it observed something outside the root.
type raceOp func(r *Root, secretIno uint64, n int) (acted bool, leak string)

func readAll(r *Root, name string) (string, bool) {
	f, err := r.Open(name)
	if err != nil {
		return "", false
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	return string(b), true
}

var raceOps = []struct {
	name string
	op   raceOp
}{
	{"open", func(r *Root, _ uint64, n int) (bool, string) {
		s, ok := readAll(r, "d/shadow")
		if strings.Contains(s, hostSecret) {
			return ok, "read the host secret"
		}
		if f, err := r.OpenFile("d/pwned", unix.O_WRONLY|unix.O_CREAT, 0o644); err == nil {
			f.Close()
		}
		return ok, ""
	}},
	{"stat", func(r *Root, ino uint64, _ int) (bool, string) {
		st, err := r.Stat("d/shadow")
		if err == nil && st.Ino == ino {
			return true, "stat of the host secret"
		}
		return err == nil, ""
	}},
	{"lstat", func(r *Root, ino uint64, _ int) (bool, string) {
		st, err := r.Lstat("d/shadow")
		if err == nil && st.Ino == ino {
			return true, "lstat of the host secret"
		}
		return err == nil, ""
	}},
	{"mkdir", func(r *Root, _ uint64, n int) (bool, string) {
		return r.Mkdir(fmt.Sprintf("d/new-%d", n), 0o755) == nil, ""
	}},
	{"unlink", func(r *Root, _ uint64, n int) (bool, string) {
		name := fmt.Sprintf("d/v-%d", n)
		if f, err := r.OpenFile(name, unix.O_WRONLY|unix.O_CREAT, 0o644); err == nil {
			f.Close()
		}
		err := r.Unlink(name)
		r.Mkdir(name, 0o755)
		err2 := r.Rmdir(name)
		return err == nil || err2 == nil, ""
	}},
	{"removeall", func(r *Root, _ uint64, n int) (bool, string) {
		// A small tree made through d, removed through d: both may
		// find the link there instead.
		name := fmt.Sprintf("d/ra-%d", n)
		made := r.Mkdir(name, 0o755) == nil
		if made {
			if f, err := r.OpenFile(name+"/f", unix.O_WRONLY|unix.O_CREAT, 0o644); err == nil {
				f.Close()
			}
		}
		r.RemoveAll(name)
		r.RemoveAll("d/victimdir")
		r.Mkdir("dir/victimdir", 0o755)
		return made, ""
	}},
	{"rename", func(r *Root, _ uint64, n int) (bool, string) {
		err := r.Rename("d/victim", "d/renamed")
		if err == nil {
			r.Rename("dir/renamed", "dir/victim")
			r.Rename("d/renamed", "d/victim")
		}
		return err == nil, ""
	}},
	{"link", func(r *Root, _ uint64, n int) (bool, string) {
		return r.Link("d/shadow", fmt.Sprintf("d/hard-%d", n)) == nil, ""
	}},
	{"symlink", func(r *Root, _ uint64, n int) (bool, string) {
		return r.Symlink("x", fmt.Sprintf("d/sl-%d", n)) == nil, ""
	}},
	{"readlink", func(r *Root, _ uint64, n int) (bool, string) {
		s, err := r.Readlink("d/lnk")
		if s == "OUTSIDE-LINK" {
			return true, "read the host symlink"
		}
		return err == nil, ""
	}},
	{"utimes", func(r *Root, _ uint64, n int) (bool, string) {
		err := r.Chtimes("d/shadow", epoch())
		err2 := r.Lchtimes("d/shadow", epoch())
		err3 := r.Chmod("d/shadow", 0o600)
		return err == nil || err2 == nil || err3 == nil, ""
	}},
	{"readdir", func(r *Root, _ uint64, n int) (bool, string) {
		f, err := r.OpenFile("d", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return false, ""
		}
		defer f.Close()
		names, _ := f.Readdirnames(-1)
		if slices.Contains(names, "host-only") {
			return true, "listed the host directory"
		}
		return true, ""
	}},
}

// TestRenameRace races the attacker's renames against every kind of
// operation, for raceAttempts attempts or raceDeadline per kind, with a
// relative and an absolute link out of the root; nothing outside the root
// may be read, listed, created, changed or removed.
func TestRenameRace(t *testing.T) {
	targets := map[string]func(host string) string{
		"relative": func(string) string { return "../host" },
		"absolute": func(host string) string { return host },
	}
	for tname, target := range targets {
		for _, tc := range raceOps {
			t.Run(tname+"/"+tc.name, func(t *testing.T) {
				f := newRaceFixture(t, target)
				stop := make(chan struct{})
				var swaps atomic.Int64
				var wg sync.WaitGroup
				wg.Add(1)
				go func() { defer wg.Done(); f.swap(stop, &swaps) }()
				deadline := time.Now().Add(raceDeadline)
				attempts, acted, leaks := 0, 0, 0
				// raceAttempts, and beyond them until the swapper has been
				// seen on both sides (d a directory and d the link): under
				// load it may hardly run during the first attempts.
				exercised := func() bool { return acted > 0 && attempts > acted }
				for (attempts < raceAttempts || !exercised()) && time.Now().Before(deadline) {
					if testing.Short() && acted >= raceShortEnough && attempts-acted >= raceShortEnough {
						break
					}
					attempts++
					ok, leak := tc.op(f.r, f.secret.Ino, attempts)
					if ok {
						acted++
					}
					if leak != "" {
						leaks++
						if leaks <= 3 {
							t.Errorf("attempt %d: %s", attempts, leak)
						}
					}
				}
				close(stop)
				wg.Wait()
				f.untouched(t)
				t.Logf("%s: %d attempts, %d acted, %d swaps, %d leaks", tc.name, attempts, acted, swaps.Load(), leaks)
				if acted == 0 {
					t.Errorf("no attempt found d as a directory in %d attempts (%d swaps): the race was not exercised", attempts, swaps.Load())
				}
			})
		}
	}
}
