package sandboxer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/containerd/errdefs"
)

// Socket paths. A unix socket address holds at most maxSocketPath bytes, so
// no socket may live at a path that grows with the state directory and the
// sandbox ID (containerd's 64-hex IDs alone take 64). As containerd does for
// its shims (/run/containerd/s/<hash>), the sandboxer keeps every socket it
// or a backend creates under a short directory, the sockets base:
//
//	<base>/s/<16 hex of sha256(id)>.sock   a sandbox's Task API socket
//	<base>/b/<16 hex of sha256(id)>/       a backend's directory (VM sockets)
//
// The base is the state directory itself when that is short enough for the
// longest of these paths, and otherwise <shortRoot>/<12 hex of
// sha256(state dir)>: short whatever the state directory, and distinct for
// every state directory so two sandboxers never share one.
const (
	// maxSocketPath is the longest path a unix socket address can hold
	// (sun_path is 108 bytes with its terminating NUL).
	maxSocketPath = 107
	// backendSocketRoom is what a backend may append to its directory for
	// a socket: the VM backend's "/vm/virtiofs.sock" (17 bytes) plus a
	// hybrid-vsock "_<port>" suffix, with a margin.
	backendSocketRoom = 24
	// hashLen is how many hex digits of sha256(id) name a sandbox's socket
	// and backend directory.
	hashLen = 16
)

// shortRoot is the parent of the sockets bases of state directories too
// long to hold sockets. It is its own top-level directory, apart from the
// default state directory (/run/kuasar), so that no sandboxer's clean-up of
// its own orphans can touch another's sockets.
var shortRoot = "/run/kuasar-s"

// maxBaseLen is the longest sockets base every layout fits under.
const maxBaseLen = maxSocketPath - len("/b/") - hashLen - backendSocketRoom

// socketsBase returns the sockets base for state directory root (absolute),
// and whether it is the state directory itself.
func socketsBase(root string) (base string, inState bool) {
	if len(root) <= maxBaseLen {
		return root, true
	}
	sum := sha256.Sum256([]byte(root))
	return filepath.Join(shortRoot, hex.EncodeToString(sum[:6])), false
}

// prepareBase creates base (mode 0700) when it is outside the state
// directory and checks that it and its parent are real directories of this
// user that no one else can write: sockets in it are the keys to every
// sandbox. A base inside the state directory is the state directory's.
func prepareBase(root, base string) error {
	if base == root {
		return nil
	}
	if len(base) > maxBaseLen {
		return fmt.Errorf("state dir %s (%d bytes) is too long for unix socket paths (%d bytes at most) and the short directory %s is too: "+
			"use a --state-dir of at most %d bytes: %w", root, len(root), maxSocketPath, base, maxBaseLen, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(base, 0o700); err != nil {
		return fmt.Errorf("state dir %s is too long (%d bytes) for unix socket paths under it, and the short socket directory %s cannot be created (%w): "+
			"use a --state-dir of at most %d bytes: %w", root, len(root), base, err, maxBaseLen, errdefs.ErrFailedPrecondition)
	}
	for _, d := range []string{filepath.Dir(base), base} {
		fi, err := os.Lstat(d)
		if err != nil {
			return err
		}
		if !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 {
			return fmt.Errorf("socket directory %s is not a directory only its owner can write (mode %v): remove it or fix its mode: %w",
				d, fi.Mode(), errdefs.ErrFailedPrecondition)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
			return fmt.Errorf("socket directory %s belongs to uid %d, not to this process (uid %d): remove it: %w",
				d, st.Uid, os.Geteuid(), errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}

// idHash names a sandbox's socket and backend directory.
func idHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:hashLen/2])
}

// taskSocket is the Task API socket of sandbox id.
func (s *store) taskSocket(id string) string {
	return filepath.Join(s.base, "s", idHash(id)+".sock")
}

// orphanSockets lists task sockets that belong to no record.
func (s *store) orphanSockets(recs []*record) []string {
	keep := map[string]bool{}
	for _, r := range recs {
		keep[s.taskSocket(r.ID)] = true
	}
	entries, _ := os.ReadDir(filepath.Join(s.base, "s"))
	var out []string
	for _, e := range entries {
		if p := filepath.Join(s.base, "s", e.Name()); !keep[p] && e.Type()&fs.ModeSocket != 0 {
			out = append(out, p)
		}
	}
	return out
}

// removeSocket removes a socket file, and nothing else.
func removeSocket(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s is not a socket: left in place: %w", p, errdefs.ErrFailedPrecondition)
	}
	return os.Remove(p)
}
