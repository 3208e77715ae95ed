package template

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// Memory directories outlive their stores unless someone removes them: a
// store's memory directory (on /dev/shm, outside its state directory)
// stays when the state directory is deleted (`rm -rf` of a sandboxer's
// state, a test's temporary directory), holding hundreds of MiB of RAM
// for good. So every memory directory records its owner next to it
// (<memdir>.owner: the state directory's path, device and inode), and
// opening a store (Reap) sweeps the memory directories beside its own
// whose owner is gone. Claiming and sweeping take an exclusive flock of
// the directory holding the memory directories, so a sweep never sees a
// memory directory being created without its record. A state directory
// deleted and recreated under the same path is another owner (another
// inode): its store does not adopt the old memory, it removes it when it
// claims the directory.

// ownerSuffix names a memory directory's owner record beside it.
const ownerSuffix = ".owner"

// legacyGrace is how long a memory directory without an owner record
// (made before records existed) must have been left untouched before a
// sweep removes it: a store of an older binary that still runs gets no
// record, and its build in progress writes files newer than this.
const legacyGrace = 10 * time.Minute

// owner is a memory directory's owner record.
type owner struct {
	// Dir is the store's state directory.
	Dir string `json:"dir"`
	// Dev, Inode and BirthNs (its creation time where the file system
	// records one, else 0) identify that directory: one recreated under
	// the same path is another owner, even when it reuses the inode.
	Dev     uint64 `json:"dev"`
	Inode   uint64 `json:"inode"`
	BirthNs int64  `json:"birth_ns"`
}

// identifyDir returns the owner record of directory dir.
func identifyDir(dir string) (owner, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, 0, unix.STATX_TYPE|unix.STATX_INO|unix.STATX_BTIME, &stx); err != nil {
		return owner{}, err
	}
	if stx.Mode&unix.S_IFMT != unix.S_IFDIR {
		return owner{}, fmt.Errorf("%s: not a directory: %w", dir, errdefs.ErrInvalidArgument)
	}
	o := owner{Dir: dir, Dev: unix.Mkdev(stx.Dev_major, stx.Dev_minor), Inode: stx.Ino}
	if stx.Mask&unix.STATX_BTIME != 0 {
		o.BirthNs = stx.Btime.Sec*1e9 + int64(stx.Btime.Nsec)
	}
	return o, nil
}

// alive reports whether o's directory still exists, as the same directory.
func (o owner) alive() bool {
	now, err := identifyDir(o.Dir)
	return err == nil && now == o
}

// separateMem reports whether the store's memory lives outside its
// state directory (and so needs an owner record).
func (s *Store) separateMem() bool {
	return filepath.Clean(s.memDir) != filepath.Clean(s.dir)
}

// lockMemRoot takes the exclusive flock of the directory holding the
// memory directories (claims and sweeps), creating it.
func lockMemRoot(root string) (func(), error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("template store: %w", err)
	}
	f, err := os.Open(root)
	if err != nil {
		return nil, fmt.Errorf("template store: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("template store: lock %s: %w", root, err)
	}
	return func() { f.Close() }, nil
}

func readOwner(memDir string) (owner, error) {
	var o owner
	b, err := os.ReadFile(memDir + ownerSuffix)
	if err != nil {
		return o, err
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return o, fmt.Errorf("owner record %s: %w", memDir+ownerSuffix, err)
	}
	return o, nil
}

// claimMem makes the store's memory directory (its state directory
// exists) and records the store as its owner. Memory another owner left
// under the same path (a state directory deleted and recreated) is
// removed first.
func (s *Store) claimMem(ctx context.Context) error {
	if !s.separateMem() {
		return os.MkdirAll(s.memDir, 0o700)
	}
	abs, err := filepath.Abs(s.dir)
	if err != nil {
		return fmt.Errorf("template store: %w", err)
	}
	me, err := identifyDir(abs)
	if err != nil {
		return fmt.Errorf("template store: %w", err)
	}
	unlock, err := lockMemRoot(filepath.Dir(s.memDir))
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := readOwner(s.memDir)
	if err == nil && cur == me && fileExists(s.memDir) {
		return nil
	}
	if err == nil && cur != me {
		// Another store's memory (or a former directory's of this path).
		log.G(ctx).WithField("memdir", s.memDir).WithField("owner", cur.Dir).Info("vm: removing template memory a former store left")
		if err := os.RemoveAll(s.memDir); err != nil {
			return fmt.Errorf("template store: remove memory of former owner %s: %w", cur.Dir, err)
		}
	}
	if err := os.MkdirAll(s.memDir, 0o700); err != nil {
		return fmt.Errorf("template store: %w", err)
	}
	b, _ := json.Marshal(me)
	tmp := s.memDir + ownerSuffix + tmpPrefix
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("template store: %w", err)
	}
	if err := os.Rename(tmp, s.memDir+ownerSuffix); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("template store: %w", err)
	}
	return nil
}

// releaseMem removes the store's memory directory and its owner record
// once the directory is empty (RemoveAll).
func (s *Store) releaseMem() {
	if !s.separateMem() {
		return
	}
	unlock, err := lockMemRoot(filepath.Dir(s.memDir))
	if err != nil {
		return
	}
	defer unlock()
	if err := os.Remove(s.memDir); err == nil || errors.Is(err, os.ErrNotExist) {
		_ = os.Remove(s.memDir + ownerSuffix)
	}
}

// SweepOrphans removes the memory directories beside the store's own
// whose owner (state directory) is gone or was replaced, and returns
// how many it removed. Memory directories of live stores, and of builds
// in progress (their store's directory exists), stay. A directory
// without an owner record is removed only when it looks like a memory
// directory of an older binary (a name of 16 hex digits holding nothing
// but memory files) untouched for legacyGrace. Reap calls it.
func (s *Store) SweepOrphans(ctx context.Context) (int, error) {
	if !s.separateMem() {
		return 0, nil
	}
	root := filepath.Dir(s.memDir)
	if !fileExists(root) {
		return 0, nil
	}
	unlock, err := lockMemRoot(root)
	if err != nil {
		return 0, err
	}
	defer unlock()
	ents, err := os.ReadDir(root)
	if err != nil {
		return 0, fmt.Errorf("template store: sweep %s: %w", root, err)
	}
	n := 0
	var errs []error
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(root, name)
		switch {
		case strings.HasSuffix(name, ownerSuffix):
			mem := strings.TrimSuffix(p, ownerSuffix)
			o, err := readOwner(mem)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				// An unreadable record: its memory has no owner.
				log.G(ctx).WithError(err).Warn("vm: corrupt template memory owner record")
			} else if err == nil && o.alive() {
				continue
			}
			if err := os.RemoveAll(mem); err != nil {
				errs = append(errs, err)
				continue
			}
			_ = os.Remove(p)
			n++
			log.G(ctx).WithField("memdir", mem).WithField("owner", o.Dir).Info("vm: removed template memory whose store's directory is gone")
		case e.IsDir() && !fileExists(p+ownerSuffix) && legacyMemDir(p):
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
				continue
			}
			n++
			log.G(ctx).WithField("memdir", p).Info("vm: removed template memory without owner record left by an older version")
		}
	}
	return n, errors.Join(errs...)
}

// legacyMemDir reports whether p looks like a memory directory made
// before owner records (16 hex digits naming it, only memory files in
// it) that nothing touched for legacyGrace.
func legacyMemDir(p string) bool {
	name := filepath.Base(p)
	if len(name) != 16 || strings.Trim(name, "0123456789abcdef") != "" {
		return false
	}
	old := time.Now().Add(-legacyGrace)
	fi, err := os.Lstat(p)
	if err != nil || fi.ModTime().After(old) {
		return false
	}
	ents, err := os.ReadDir(p)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), memSuffix) {
			return false
		}
		if i, err := e.Info(); err != nil || i.ModTime().After(old) {
			return false
		}
	}
	return true
}
