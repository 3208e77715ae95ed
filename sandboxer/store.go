package sandboxer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/atomicfile"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
)

// Sandbox states, as reported by Status (the strings containerd's CRI maps).
const (
	stateCreated = "SANDBOX_CREATED"
	stateReady   = "SANDBOX_READY"
	stateNotRdy  = "SANDBOX_NOTREADY"
)

// record is what the sandboxer persists about one sandbox: enough to answer
// Status and to re-attach the backend after a restart.
type record struct {
	ID         string            `json:"id"`
	Namespace  string            `json:"namespace,omitempty"`
	State      string            `json:"state"`
	Handler    string            `json:"handler,omitempty"`
	Backend    string            `json:"backend,omitempty"`
	Hypervisor string            `json:"hypervisor,omitempty"`
	NetnsPath  string            `json:"netns_path,omitempty"`
	Hostname   string            `json:"hostname,omitempty"`
	Annot      map[string]string `json:"annotations,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Resources  backend.Resources `json:"resources"`
	CreatedAt  time.Time         `json:"created_at"`
	StartedAt  time.Time         `json:"started_at,omitempty"`
	ExitedAt   time.Time         `json:"exited_at,omitempty"`
	ExitStatus uint32            `json:"exit_status,omitempty"`
	Exited     bool              `json:"exited,omitempty"`
	Checkpoint []byte            `json:"checkpoint,omitempty"`
}

// store keeps one JSON file per sandbox under <root>/sandboxes/<id>/.
type store struct {
	root string
	// base is the short directory holding task sockets and backend
	// directories (see paths.go): root itself unless root is too long.
	base string
	// volatile is true when root is on tmpfs: fsync is then skipped, as
	// tmpfs content survives any crash of the process but no reboot, which
	// fsync would not change.
	volatile bool
}

// tmpfsMagic is TMPFS_MAGIC from statfs(2).
const tmpfsMagic = 0x01021994

// onTmpfs reports whether dir lives on tmpfs.
func onTmpfs(dir string) bool {
	var st syscall.Statfs_t
	return syscall.Statfs(dir, &st) == nil && st.Type == tmpfsMagic
}

const recordFile = "sandbox.json"

func (s *store) dir(id string) string { return filepath.Join(s.root, "sandboxes", id) }

// validID refuses IDs that could escape the state directory.
func validID(id string) error {
	if id == "" {
		return fmt.Errorf("sandbox ID is empty: containerd must send sandbox_id: %w", errdefs.ErrInvalidArgument)
	}
	if len(id) > 128 || strings.ContainsAny(id, "/\\\x00") || id == "." || id == ".." || strings.HasPrefix(id, ".") {
		return fmt.Errorf("sandbox ID %q is not a valid name (no '/', no leading '.', at most 128 bytes): %w", id, errdefs.ErrInvalidArgument)
	}
	return nil
}

// save writes r atomically: a temp file in the same directory, fsync, rename,
// then fsync of the directory, so a crash leaves the old or the new record.
func (s *store) save(r *record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	// The directory exists from the first save on (create): made here
	// only when the write says it is missing.
	err = atomicfile.WriteFile(filepath.Join(s.dir(r.ID), recordFile), b, 0o600, !s.volatile)
	if errors.Is(err, fs.ErrNotExist) {
		return s.create(r, b)
	}
	return err
}

// create writes the first record of a new sandbox: its directory first
// (the save that would fail without it, and the stats of os.MkdirAll, are
// spared), then the record as save does. b is r marshalled, or nil.
func (s *store) create(r *record, b []byte) error {
	if b == nil {
		var err error
		if b, err = json.Marshal(r); err != nil {
			return err
		}
	}
	dir := s.dir(r.ID)
	if err := unix.Mkdir(dir, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		// The sandboxes directory itself went missing: os.MkdirAll
		// makes the whole path.
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	return atomicfile.WriteFile(filepath.Join(dir, recordFile), b, 0o600, !s.volatile)
}

// load reads every record; a directory without a readable record (a create
// that crashed before its first save) is returned in orphans for removal.
func (s *store) load() (recs []*record, orphans []string, err error) {
	entries, err := os.ReadDir(filepath.Join(s.root, "sandboxes"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir(e.Name()), recordFile))
		var r record
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil || r.ID != e.Name() {
			orphans = append(orphans, s.dir(e.Name()))
			continue
		}
		recs = append(recs, &r)
	}
	return recs, orphans, nil
}

// backendDir is the directory a backend gets for a sandbox:
// <base>/b/<16 hex of sha256(id)>, short enough for the sockets backends
// create in it whatever the state directory and the ID (see paths.go).
func (s *store) backendDir(id string) string {
	return filepath.Join(s.base, "b", idHash(id))
}

// remove deletes everything the sandbox had: processes its backend
// directory still owns, mounts below it, its task socket and files.
func (s *store) remove(ctx context.Context, id string) error {
	return errors.Join(removeSocket(s.taskSocket(id)), reapDir(ctx, s.backendDir(id)), removeDir(s.dir(id), recordFile))
}

// removeDir removes dir, which usually holds only the files named in
// known: those are unlinked and dir removed (a system call each), and
// anything else there makes it fall back to os.RemoveAll (which lists the
// directory first, and on a sandbox's removal cost twice the calls).
func removeDir(dir string, known ...string) error {
	for _, name := range known {
		if err := unix.Unlink(filepath.Join(dir, name)); err != nil && !errors.Is(err, unix.ENOENT) {
			return os.RemoveAll(dir)
		}
	}
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return os.RemoveAll(dir)
	}
	return nil
}

// orphanBackendDirs lists backend directories that belong to no record.
func (s *store) orphanBackendDirs(recs []*record) []string {
	keep := map[string]bool{}
	for _, r := range recs {
		keep[s.backendDir(r.ID)] = true
	}
	entries, _ := os.ReadDir(filepath.Join(s.base, "b"))
	var out []string
	for _, e := range entries {
		if p := filepath.Join(s.base, "b", e.Name()); !keep[p] {
			out = append(out, p)
		}
	}
	return out
}
