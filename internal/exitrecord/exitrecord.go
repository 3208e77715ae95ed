// Package exitrecord keeps how a container's init process ended in its OCI
// bundle directory, so that `containerd-shim-kuasar-v1 delete` can report it.
//
// containerd runs the runtime binary's delete when it loses the connection
// to a task's server (kuasar-sandboxer died or restarted) and publishes the
// exit status the binary prints as the task's exit. The binary has nothing
// but the bundle path to go by, so the sandboxer writes this record there,
// atomically, as soon as a task's init process exits; without a record the
// task was still running when its host went away.
package exitrecord

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// FileName is the record's name inside the bundle directory.
const FileName = "kuasar-exit.json"

// maxSize bounds what Read accepts: a record is well under 200 bytes.
const maxSize = 4096

// Record is how a task's init process ended.
type Record struct {
	// Status is the exit status containerd reports (128+signal when killed).
	Status uint32 `json:"exit_status"`
	// ExitedAt is when the process ended.
	ExitedAt time.Time `json:"exited_at"`
	// Pid is the pid the task reported (the host process for Wasm tasks).
	Pid uint32 `json:"pid,omitempty"`
}

// Write stores r in bundle/FileName atomically: a temporary file created
// with O_EXCL in the bundle directory (opened once, without following a
// symlink), then renamed over the record, so a reader sees a whole record or
// none. The bundle is on tmpfs under containerd's state directory, so the
// file is not synced. A failed Write leaves no temporary file.
func Write(bundle string, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	dfd, err := unix.Open(bundle, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open bundle %s for the exit record: %w", bundle, errno(err))
	}
	defer unix.Close(dfd)
	tmp := ".tmp-" + FileName + "-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create exit record in %s: %w", bundle, errno(err))
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, werr := f.Write(b)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = unix.Renameat(dfd, tmp, dfd, FileName)
	}
	if werr != nil {
		unix.Unlinkat(dfd, tmp, 0)
		return fmt.Errorf("write exit record in %s: %w", bundle, werr)
	}
	return nil
}

// Read returns the record in bundle. It is an ErrNotFound error when the
// bundle holds none, and an ErrInvalidArgument error when what is there is
// not a regular file of a sane size holding a record. The file is opened
// beneath the bundle directory without following any symlink.
func Read(bundle string) (Record, error) {
	dfd, err := unix.Open(bundle, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return Record{}, fmt.Errorf("open bundle %s: %w", bundle, errno(err))
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat2(dfd, FileName, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return Record{}, fmt.Errorf("exit record %s/%s is a symlink, not a record: %w", bundle, FileName, errdefs.ErrInvalidArgument)
		}
		return Record{}, fmt.Errorf("exit record in %s: %w", bundle, errno(err))
	}
	f := os.NewFile(uintptr(fd), FileName)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Record{}, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxSize {
		return Record{}, fmt.Errorf("exit record %s/%s is not a regular file of at most %d bytes (%s, %d bytes): %w",
			bundle, FileName, maxSize, fi.Mode().Type(), fi.Size(), errdefs.ErrInvalidArgument)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return Record{}, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("exit record %s/%s: %w: %w", bundle, FileName, err, errdefs.ErrInvalidArgument)
	}
	if r.ExitedAt.IsZero() {
		return Record{}, fmt.Errorf("exit record %s/%s has no exited_at: %w", bundle, FileName, errdefs.ErrInvalidArgument)
	}
	return r, nil
}

// errno maps a missing file or directory to ErrNotFound, keeping the cause.
func errno(err error) error {
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	}
	return err
}
