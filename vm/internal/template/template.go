// Package template keeps VM templates: a guest booted once to the point
// where its agent serves, paused, and saved as a guest memory file plus
// the VMM's device state, from which new VMs are restored in a fraction
// of a boot (the pattern of Kata's virtcontainers/factory).
//
// A template is keyed by everything a restored VM must share with it
// (Key): the VMM binary and version, the guest kernel and initramfs, the
// kernel command line, machine, vCPUs, memory and device set. Get hands
// out the template for a key, building it on first need; a template
// whose key part changed gets another digest and so another template,
// and one found broken is removed and rebuilt. Building happens in a
// temporary directory renamed into place under an exclusive flock, so no
// process ever uses a half-written template; several builders of one key
// wait for the first.
//
// The memory file lives on a tmpfs (MemDir) where one is available, the
// state and metadata in the state directory (Dir). A memory directory
// records its store as owner, and opening a store removes the memory of
// stores whose directory is gone (owner.go).
//
// A build runs its VMM in a work directory of the store
// (Dir/.build-<16 hex of the digest>-<random>, WorkDir), never outside
// it, nor in a temporary directory no one owns: the VMM is
// recorded there before it starts and carries the directory as its mark
// (internal/procmark), and the build holds the digest's flock while the
// directory exists. So when the process that builds is killed, whoever
// next takes that flock (the next build of the key, or Reap when a
// sandboxer or `kuasar run` opens the store) finds the builder's VMM by
// its mark, kills it, and removes the work directory and the half-built
// template. Crash points (internal/crashpoint) named template.build.* let
// the kill-loop test each phase.
package template

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/crashpoint"
	"github.com/kuasar-go/kuasar/internal/procmark"
)

// File names inside a template's directory.
const (
	// MetaName holds the Key and what the template's files must look like.
	MetaName = "meta.json"
	// StateName is the VMM's saved device state (QEMU's migration stream).
	StateName = "state"
	// memSuffix names a template's memory file in MemDir: <digest>.mem.
	memSuffix = ".mem"
	// tmpPrefix marks directories and files being built.
	tmpPrefix = ".tmp-"
	// buildPrefix names the work directories of builds (WorkDir):
	// .build-<first buildDigestLen hex digits of the digest>-<random>,
	// short for the VMM's unix sockets below it.
	buildPrefix = ".build-"
	// buildDigestLen is how much of the digest names a work directory.
	buildDigestLen = 16
	// maxSocketPath is the longest path a unix socket address holds.
	maxSocketPath = 107
)

// Key is everything a VM restored from a template must have in common
// with it. Files are identified by path, size, modification time and
// inode (FileID), so replacing or rewriting one changes the key.
type Key struct {
	// VMM names the hypervisor ("qemu").
	VMM string `json:"vmm"`
	// Binary is the VMM binary's identity.
	Binary FileID `json:"binary"`
	// Version is what the VMM reports as its version.
	Version string `json:"version"`
	// Kernel and Initramfs are the guest's images.
	Kernel    FileID `json:"kernel"`
	Initramfs FileID `json:"initramfs"`
	// Cmdline is the guest kernel command line.
	Cmdline string `json:"cmdline"`
	// Machine is the machine type with its options; Accel the accelerator.
	Machine string `json:"machine"`
	Accel   string `json:"accel"`
	// VCPUs and MemoryMB are the VM's sizes.
	VCPUs    uint32 `json:"vcpus"`
	MemoryMB uint64 `json:"memory_mb"`
	// Devices lists the device set in command-line order.
	Devices []string `json:"devices"`
}

// FileID identifies one version of a file without reading it.
type FileID struct {
	// Path is the file as configured.
	Path string `json:"path"`
	// Size, MtimeNs, Inode and Dev are what stat(2) reports for it.
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	Inode   uint64 `json:"inode"`
	Dev     uint64 `json:"dev"`
}

// Identify returns the FileID of path (symlinks followed).
func Identify(path string) (FileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return FileID{}, fmt.Errorf("template key: %s: %w", path, err)
	}
	return FileID{Path: path, Size: st.Size, MtimeNs: st.Mtim.Nano(), Inode: st.Ino, Dev: st.Dev}, nil
}

// Digest is the key's name: a hex SHA-256 of its JSON form.
func (k Key) Digest() string {
	b, _ := json.Marshal(k)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:16])
}

// meta is MetaName's content: the key and the files' identities as they
// were when the template was made.
type meta struct {
	Key      Key    `json:"key"`
	MemSize  int64  `json:"mem_size"`
	MemInode uint64 `json:"mem_inode"`
	MemCtime int64  `json:"mem_ctime_ns"`
	// Build tells one build of a key from another.
	Build     string `json:"build"`
	StateSize int64  `json:"state_size"`
}

// Template is one usable template.
type Template struct {
	// Key is what it was built for.
	Key Key
	// Dir is its directory (meta and state).
	Dir string
	// MemPath is the guest memory file. Restored VMs never open it: they
	// map Memory(), its sealed copy (see sealed.go).
	MemPath string
	// StatePath is the saved device state.
	StatePath string

	build    string   // tells a rebuilt template from this one
	memInode uint64   // the memory file's inode (sealed copies check it)
	mem      *os.File // sealed copy of the memory, read-only (Memory)
	sealed   *sealedMem
}

// Store keeps templates in Dir (state) and MemDir (memory files).
type Store struct {
	dir, memDir string
	sealed      sealedCache // this process's sealed copies (sealed.go)
}

// NewStore returns a store keeping templates in dir and their memory
// files in memDir (dir when empty). Both are created 0700 on first build.
func NewStore(dir, memDir string) *Store {
	if memDir == "" {
		memDir = dir
	}
	return &Store{dir: dir, memDir: memDir}
}

// DefaultMemDir is where a store's memory files go: a "templates"
// directory below /dev/shm when that is a tmpfs, otherwise "" (next to
// the state).
func DefaultMemDir(name string) string {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		return ""
	}
	return filepath.Join("/dev/shm", name)
}

// Dir is the store's state directory.
func (s *Store) Dir() string { return s.dir }

// BuildFunc makes a template for key: it must write the guest memory to
// mem and the device state to state (both exist, empty, when it is
// called; it may recreate them) and leave nothing running. Whatever it
// runs must run in WorkDir(ctx), marked with a directory below it.
type BuildFunc func(ctx context.Context, key Key, mem, state string) error

type workDirKey struct{}

// CheckSocketRoom fails, naming the fix, when unix sockets of up to room
// bytes appended to a build's work directory work would not fit a socket
// address: the store's directory (below the state directory) is too long.
func CheckSocketRoom(work string, room int) error {
	if len(work)+room <= maxSocketPath {
		return nil
	}
	over := len(work) + room - maxSocketPath
	return fmt.Errorf("the VM template builder's work directory %s is %d bytes too long for its unix sockets: "+
		"use a state directory %d bytes shorter, or template = \"off\": %w", work, over, over, errdefs.ErrInvalidArgument)
}

// WorkDir is the work directory of the build that ctx (the context a
// BuildFunc is called with) belongs to: an empty directory of the store,
// short enough for a VMM's unix sockets below a short state directory,
// removed when the build ends. A VMM started with its state there and
// marked with it (as vm/internal/vmm marks every VMM with its state
// directory) is killed by the store when the builder dies. It is "" for
// another context.
func WorkDir(ctx context.Context) string {
	d, _ := ctx.Value(workDirKey{}).(string)
	return d
}

// Get returns the template for key, building it with build when there is
// none or the one there is broken (the reason is logged). Concurrent
// callers for one key build it once. The template's Memory is set; the
// caller closes it with Close.
func (s *Store) Get(ctx context.Context, key Key, build BuildFunc) (*Template, error) {
	t, err := s.get(ctx, key, build)
	if err != nil {
		return nil, err
	}
	if err := s.attachSealed(ctx, t); err != nil {
		return nil, err
	}
	return t, nil
}

func (s *Store) get(ctx context.Context, key Key, build BuildFunc) (*Template, error) {
	d := key.Digest()
	if t, err := s.lookup(key); err == nil {
		return t, nil
	}
	unlock, err := s.lock(ctx, d)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Another builder may have finished while we waited.
	t, err := s.lookup(key)
	if err == nil {
		return t, nil
	}
	if !errors.Is(err, errdefs.ErrNotFound) {
		log.G(ctx).WithField("template", d).WithError(err).Warn("vm: template unusable, rebuilding it")
	}
	s.removeLocked(d)
	return s.buildLocked(ctx, key, build)
}

// Lookup returns the template for key when a usable one exists
// (errdefs.ErrNotFound when none, another error when it is broken),
// with its Memory set as Get does.
func (s *Store) Lookup(key Key) (*Template, error) {
	t, err := s.lookup(key)
	if err != nil {
		return nil, err
	}
	if err := s.attachSealed(context.TODO(), t); err != nil {
		return nil, err
	}
	return t, nil
}

func (s *Store) paths(d string) (dir, mem string) {
	return filepath.Join(s.dir, d), filepath.Join(s.memDir, d+memSuffix)
}

func (s *Store) lookup(key Key) (*Template, error) {
	d := key.Digest()
	dir, mem := s.paths(d)
	b, err := os.ReadFile(filepath.Join(dir, MetaName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no template %s: %w", d, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", d, err)
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("template %s: corrupt %s: %w: %w", d, MetaName, err, errdefs.ErrDataLoss)
	}
	if m.Key.Digest() != d {
		return nil, fmt.Errorf("template %s: its %s describes key %s: %w", d, MetaName, m.Key.Digest(), errdefs.ErrDataLoss)
	}
	var st unix.Stat_t
	if err := unix.Stat(mem, &st); err != nil || st.Size != m.MemSize || st.Ino != m.MemInode || st.Ctim.Nano() != m.MemCtime {
		return nil, fmt.Errorf("template %s: memory file %s missing or not the one saved (%v): %w", d, mem, err, errdefs.ErrDataLoss)
	}
	state := filepath.Join(dir, StateName)
	if err := unix.Stat(state, &st); err != nil || st.Size != m.StateSize || st.Size == 0 {
		return nil, fmt.Errorf("template %s: state file %s missing or not the one saved (%v): %w", d, state, err, errdefs.ErrDataLoss)
	}
	return &Template{Key: m.Key, Dir: dir, MemPath: mem, StatePath: state, build: m.Build, memInode: m.MemInode}, nil
}

// lock takes the exclusive build lock of digest d; the wait ends with ctx.
func (s *Store) lock(ctx context.Context, d string) (func(), error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("template store: %w", err)
	}
	if err := s.claimMem(ctx); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(s.dir, d+".lock"), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("template store: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- unix.Flock(int(f.Fd()), unix.LOCK_EX) }()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("template store: lock %s: %w", f.Name(), err)
		}
	case <-ctx.Done():
		// The flock goroutine ends when the fd closes (EBADF) or the
		// lock is granted; closing releases either way.
		go func() { <-done; f.Close() }()
		return nil, ctx.Err()
	}
	return func() { f.Close() }, nil
}

// buildLocked builds key's template in temporary names and renames them
// into place. A failure removes everything it made.
func (s *Store) buildLocked(ctx context.Context, key Key, build BuildFunc) (_ *Template, retErr error) {
	d := key.Digest()
	dir, mem := s.paths(d)
	if err := s.removeLeftovers(d); err != nil {
		return nil, fmt.Errorf("building VM template %s: clean up after an earlier builder: %w", d, err)
	}
	tmpDir, err := os.MkdirTemp(s.dir, tmpPrefix+d+"-")
	if err != nil {
		return nil, err
	}
	tmpMem := filepath.Join(s.memDir, tmpPrefix+filepath.Base(tmpDir)+memSuffix)
	work, err := mkWorkDir(s.dir, d)
	if err != nil {
		os.RemoveAll(tmpDir)
		return nil, err
	}

	defer func() {
		// A VMM the build left (it failed half-way) is killed before
		// the files it may still write go.
		if err := reapWork(work); err != nil {
			log.G(ctx).WithField("template", d).WithError(err).Warn("vm: clean up a template build's work directory")
		}
		if retErr != nil {
			os.RemoveAll(tmpDir)
			os.Remove(tmpMem)
			os.Remove(mem)
		}
	}()
	crashpoint.Hit("template.build.workdir")
	state := filepath.Join(tmpDir, StateName)
	for _, p := range []string{tmpMem, state} {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return nil, err
		}
		f.Close()
	}
	if err := build(context.WithValue(ctx, workDirKey{}, work), key, tmpMem, state); err != nil {
		return nil, fmt.Errorf("building VM template %s: %w", d, err)
	}
	crashpoint.Hit("template.build.saved")
	// The builder's VMM is gone: its zero pages become holes, which no
	// process restoring a clone copies (SealedCopy).
	if freed, err := PunchZeroPages(tmpMem); err != nil {
		log.G(ctx).WithField("template", d).WithError(err).Warn("vm: template memory keeps its zero pages")
	} else {
		log.G(ctx).WithField("template", d).WithField("freed_bytes", freed).Debug("vm: zero pages of the template's memory punched out")
	}
	var mst, sst unix.Stat_t
	if err := unix.Stat(tmpMem, &mst); err != nil {
		return nil, fmt.Errorf("building VM template %s: memory file: %w", d, err)
	}
	if err := unix.Stat(state, &sst); err != nil || sst.Size == 0 {
		return nil, fmt.Errorf("building VM template %s: no device state saved (%v): %w", d, err, errdefs.ErrDataLoss)
	}
	if want := int64(key.MemoryMB) << 20; mst.Size != want {
		return nil, fmt.Errorf("building VM template %s: memory file holds %d bytes, want %d: %w", d, mst.Size, want, errdefs.ErrDataLoss)
	}
	// Nothing but the store's user may read a guest's memory.
	for _, p := range []string{tmpMem, state} {
		if err := os.Chmod(p, 0o600); err != nil {
			return nil, err
		}
		if err := os.Lchown(p, os.Geteuid(), os.Getegid()); err != nil {
			return nil, err
		}
	}
	// The memory file goes into place first (a rename changes its
	// ctime, which the meta records), then the directory whose meta.json
	// makes the template visible.
	if err := os.Rename(tmpMem, mem); err != nil {
		return nil, err
	}
	crashpoint.Hit("template.build.mem-placed")
	if err := unix.Stat(mem, &mst); err != nil {
		return nil, err
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	m := meta{Key: key, MemSize: mst.Size, MemInode: mst.Ino, MemCtime: mst.Ctim.Nano(), StateSize: sst.Size, Build: hex.EncodeToString(id[:])}
	mb, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(tmpDir, MetaName), mb, 0o600); err != nil {
		return nil, err
	}
	if err := syncPath(tmpDir); err != nil {
		return nil, err
	}
	if err := os.Rename(tmpDir, dir); err != nil {
		return nil, err
	}
	log.G(ctx).WithField("template", d).WithField("memory_mb", key.MemoryMB).WithField("state_bytes", sst.Size).Info("vm: template built")
	s.pruneStale(ctx, d)
	return &Template{Key: key, Dir: dir, MemPath: mem, StatePath: filepath.Join(dir, StateName), build: m.Build, memInode: m.MemInode}, nil
}

// removeLeftovers removes what a builder of digest d that died left
// (its lock is ours now, so no builder of d runs): the VMMs still
// running in its work directories first, then the directories, the
// half-written template and its memory file.
func (s *Store) removeLeftovers(d string) error {
	var errs []error
	works, _ := filepath.Glob(filepath.Join(s.dir, buildPrefix+d[:buildDigestLen]+"-*"))
	for _, w := range works {
		if err := reapWork(w); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range []string{filepath.Join(s.dir, tmpPrefix+d+"-*"), filepath.Join(s.memDir, tmpPrefix+tmpPrefix+d+"-*"+memSuffix)} {
		old, _ := filepath.Glob(p)
		for _, o := range old {
			if err := os.RemoveAll(o); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// A memory file renamed into place whose directory never was (the
	// builder died between the two renames) is no template.
	if dir, mem := s.paths(d); fileExists(mem) && !fileExists(filepath.Join(dir, MetaName)) {
		s.removeLocked(d)
	}
	return errors.Join(errs...)
}

// mkWorkDir makes a build work directory for digest d in dir:
// .build-<16 hex of d>-<8 random hex>, as short as it can be.
func mkWorkDir(dir, d string) (string, error) {
	for {
		var r [4]byte
		_, _ = rand.Read(r[:])
		w := filepath.Join(dir, buildPrefix+d[:buildDigestLen]+"-"+hex.EncodeToString(r[:]))
		err := os.Mkdir(w, 0o700)
		if !errors.Is(err, os.ErrExist) {
			return w, err
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// reapWork kills every process marked with a directory below the build
// work directory w and removes w. The VMM's jail mounts live in its own
// mount namespace, so nothing is mounted below w on the host.
func reapWork(w string) error {
	if _, err := procmark.Reap(w); err != nil {
		return fmt.Errorf("template build %s: kill its processes: %w", w, err)
	}
	if err := os.RemoveAll(w); err != nil {
		return fmt.Errorf("template build %s: %w", w, err)
	}
	return nil
}

// Reap cleans up after every builder that died (a sandboxer or `kuasar
// run` SIGKILLed while it built a template): for each key with leftovers
// whose lock no live builder holds, it kills the builder's VMM (found by
// its mark), removes its work directory, the half-built template and its
// memory file, and returns how many builds it cleaned. Builds in progress
// (their lock is held) are left alone. Call it when a process opens the
// store after a restart. It sweeps the memory other stores left whose
// directory is gone first (SweepOrphans), and claims the store's own
// memory directory when there is one (see owner.go).
func (s *Store) Reap(ctx context.Context) (int, error) {
	if _, err := s.SweepOrphans(ctx); err != nil {
		log.G(ctx).WithError(err).Warn("vm: sweep template memory whose store is gone")
	}
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if fileExists(s.memDir) {
		// Records the owner of a memory directory made before records.
		if err := s.claimMem(ctx); err != nil {
			return 0, err
		}
	}
	if s.memDir != s.dir {
		// A memory file whose directory is gone already.
		mems, _ := os.ReadDir(s.memDir)
		ents = append(ents, mems...)
	}
	seen := map[string]bool{}
	var errs []error
	n := 0
	for _, e := range ents {
		name := strings.TrimPrefix(e.Name(), tmpPrefix+tmpPrefix)
		if name != e.Name() {
			name = tmpPrefix + name
		}
		if strings.HasPrefix(name, buildPrefix) && len(s.digestsOf(name)) == 0 {
			// No lock names it: no builder can hold one; it died.
			if err := reapWork(filepath.Join(s.dir, name)); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		for _, d := range s.digestsOf(name) {
			if seen[d] {
				continue
			}
			seen[d] = true
			unlock, ok, err := s.tryLock(d)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if !ok {
				continue // a live builder
			}
			err = s.removeLeftovers(d)
			unlock()
			if err != nil {
				errs = append(errs, err)
				continue
			}
			n++
			log.G(ctx).WithField("template", d).Warn("vm: cleaned up a template build whose builder died (its VMM killed, its files removed)")
		}
	}
	return n, errors.Join(errs...)
}

// digestsOf returns the digests whose build may have left the entry name
// of the store's directory: the one a .tmp- name holds; for a .build-
// work directory, which holds the first buildDigestLen hex digits only,
// every digest with a lock file starting with them (a build creates its
// lock before its work directory).
func (s *Store) digestsOf(name string) []string {
	switch {
	case strings.HasPrefix(name, tmpPrefix):
		if d, _, _ := strings.Cut(strings.TrimPrefix(name, tmpPrefix), "-"); validDigest(d) {
			return []string{d}
		}
	case strings.HasPrefix(name, buildPrefix):
		p, _, _ := strings.Cut(strings.TrimPrefix(name, buildPrefix), "-")
		if len(p) != buildDigestLen {
			return nil
		}
		if _, err := hex.DecodeString(p); err != nil {
			return nil
		}
		locks, _ := filepath.Glob(filepath.Join(s.dir, p+"*.lock"))
		var out []string
		for _, l := range locks {
			if d := strings.TrimSuffix(filepath.Base(l), ".lock"); validDigest(d) {
				out = append(out, d)
			}
		}
		return out
	}
	return nil
}

// validDigest reports whether d looks like a Key.Digest (so a name built
// from it stays in the store's directory).
func validDigest(d string) bool {
	if len(d) != 32 {
		return false
	}
	_, err := hex.DecodeString(d)
	return err == nil
}

// tryLock takes d's build lock without waiting: ok is false when a live
// builder holds it.
func (s *Store) tryLock(d string) (unlock func(), ok bool, err error) {
	f, err := os.OpenFile(filepath.Join(s.dir, d+".lock"), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("template store: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("template store: lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, true, nil
}

func syncPath(dir string) error {
	for _, p := range []string{filepath.Join(dir, StateName), filepath.Join(dir, MetaName), dir} {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil && !errors.Is(err, syscall.EINVAL) {
			return err
		}
	}
	return nil
}

// Invalidate removes t (found broken when restoring from it), so the next
// Get rebuilds it; it waits for a build of the same key in progress.
func (s *Store) Invalidate(ctx context.Context, t *Template, reason error) error {
	d := t.Key.Digest()
	unlock, err := s.lock(ctx, d)
	if err != nil {
		return err
	}
	defer unlock()
	// Only the template that was found broken: one rebuilt meanwhile stays.
	if cur, err := s.lookup(t.Key); err == nil && cur.build != t.build {
		return nil
	}
	log.G(ctx).WithField("template", d).WithError(reason).Warn("vm: removing a broken template")
	s.removeLocked(d)
	return nil
}

func (s *Store) removeLocked(d string) {
	s.dropSealed(d)
	dir, mem := s.paths(d)
	_ = os.RemoveAll(dir)
	_ = os.Remove(mem)
}

// RemoveAll removes every template of the store (and leftovers of
// interrupted builds), waiting for builds in progress. Restored VMs keep
// running: their memory is mapped already.
func (s *Store) RemoveAll(ctx context.Context) error {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".lock"):
			d := strings.TrimSuffix(name, ".lock")
			unlock, err := s.lock(ctx, d)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			s.removeLocked(d)
			os.Remove(filepath.Join(s.dir, name))
			unlock()
		case strings.HasPrefix(name, tmpPrefix), strings.HasPrefix(name, buildPrefix):
			// A build in progress holds its lock; one that died left this.
			for _, d := range s.digestsOf(name) {
				unlock, err := s.lock(ctx, d)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if err := s.removeLeftovers(d); err != nil {
					errs = append(errs, err)
				}
				unlock()
			}
		}
	}
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), tmpPrefix) && !strings.HasPrefix(e.Name(), buildPrefix) {
			s.removeLocked(e.Name())
		}
	}
	s.releaseMem() // only once empty
	return errors.Join(errs...)
}

// Stale reports whether a file the key names has changed since (another
// kernel after `make guest`, another QEMU): no VM will ask for it again.
func (k Key) Stale() bool {
	for _, f := range []FileID{k.Binary, k.Kernel, k.Initramfs} {
		if f.Path == "" {
			continue
		}
		if now, err := Identify(f.Path); err != nil || now != f {
			return true
		}
	}
	return false
}

// pruneStale removes the templates other than digest keep whose files
// changed: their memory would otherwise stay on the tmpfs for good. A
// template being built or used holds or waits for its own lock.
func (s *Store) pruneStale(ctx context.Context, keep string) {
	for _, t := range s.all() {
		d := t.Key.Digest()
		if d == keep || !t.Key.Stale() {
			continue
		}
		// Never wait here: another builder holds that lock.
		f, err := os.OpenFile(filepath.Join(s.dir, d+".lock"), os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			log.G(ctx).WithField("template", d).Info("vm: removing a template whose kernel, initramfs or VMM changed")
			s.removeLocked(d)
			os.Remove(f.Name())
		}
		f.Close()
	}
}

// all lists the templates whose meta can be read, usable or not.
func (s *Store) all() []Template {
	ents, _ := os.ReadDir(s.dir)
	var out []Template
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), tmpPrefix) || strings.HasPrefix(e.Name(), buildPrefix) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name(), MetaName))
		if err != nil {
			continue
		}
		var m meta
		if json.Unmarshal(b, &m) != nil || m.Key.Digest() != e.Name() {
			continue
		}
		out = append(out, Template{Key: m.Key, Dir: filepath.Join(s.dir, e.Name())})
	}
	return out
}

// List returns the usable templates in the store.
func (s *Store) List() []Template {
	var out []Template
	for _, t := range s.all() {
		if u, err := s.lookup(t.Key); err == nil {
			out = append(out, *u)
		}
	}
	return out
}
