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
	"path/filepath"
	"strconv"
	"sync/atomic"
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

// Write stores r in bundle/FileName so that a reader sees a whole record or
// none, also after a crash of the writer at any point. The record is created
// with O_EXCL, never through a symlink (not at the bundle directory, not at
// the record), and written with one write(2): a file created that way holds
// nothing until that write completes (its size grows only once the bytes
// are in it, and a write this small is never cut short by a signal), so a
// reader sees an empty file (no record, see Read) or the whole record. A
// bundle path without symlinks is opened in one openat2
// (RESOLVE_NO_SYMLINKS); otherwise the bundle directory is opened first,
// without following a symlink at it, and the record created in it. Only
// when a record exists already (a bundle reused for a second run) is the
// new one written to a temporary file and renamed over it. The bundle is on
// tmpfs under containerd's state directory, so nothing is synced. A failed
// Write leaves no file behind.
//
// Every container's exit goes through here, so the common case costs three
// system calls (openat2, write, close) and no rename (a rename is a journal
// transaction where the bundle is on a disk).
func Write(bundle string, r Record) error {
	b, err := r.marshal()
	if err != nil {
		return err
	}
	// The common case, a bundle without a record on a path without
	// symlinks, in one lookup: a path RESOLVE_NO_SYMLINKS resolves is one
	// whose bundle directory is no symlink either, so the record lands
	// where the directory descriptor below would put it. Anything else
	// (a record already there, a symlink on the path, a missing bundle)
	// takes that descriptor: two system calls more.
	if p := bundle + "/" + FileName; filepath.IsAbs(bundle) {
		fd, err := unix.Openat2(unix.AT_FDCWD, p, &unix.OpenHow{
			Flags:   unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Mode:    0o600,
			Resolve: unix.RESOLVE_NO_SYMLINKS,
		})
		if err == nil {
			if err := writeClose(fd, b); err != nil {
				unix.Unlink(p)
				return fmt.Errorf("write exit record in %s: %w", bundle, err)
			}
			return nil
		}
	}
	dfd, err := unix.Open(bundle, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open bundle %s for the exit record: %w", bundle, errno(err))
	}
	defer unix.Close(dfd)
	if err := create(dfd, FileName, b); !errors.Is(err, unix.EEXIST) {
		if err != nil {
			return fmt.Errorf("write exit record in %s: %w", bundle, err)
		}
		return nil
	}
	tmp := ".tmp-" + FileName + "-" + pid + "-" + strconv.FormatUint(seq.Add(1), 36)
	werr := create(dfd, tmp, b)
	if werr == nil {
		werr = unix.Renameat(dfd, tmp, dfd, FileName)
	}
	if werr != nil {
		unix.Unlinkat(dfd, tmp, 0)
		return fmt.Errorf("write exit record in %s: %w", bundle, werr)
	}
	return nil
}

// marshal is json.Marshal(r), written out by hand for the common record
// (every task's exit comes here; encoding/json's reflection was a seventh
// of Write's CPU time); json.Marshal for a time it cannot format that way.
func (r Record) marshal() ([]byte, error) {
	if y := r.ExitedAt.Year(); y < 0 || y > 9999 {
		return json.Marshal(r) // encoding/json's error for such a time
	}
	b := make([]byte, 0, 96)
	b = append(b, `{"exit_status":`...)
	b = strconv.AppendUint(b, uint64(r.Status), 10)
	b = append(b, `,"exited_at":"`...)
	b = r.ExitedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if r.Pid != 0 {
		b = append(b, `,"pid":`...)
		b = strconv.AppendUint(b, uint64(r.Pid), 10)
	}
	return append(b, '}'), nil
}

// seq numbers this process's temporary record names.
var seq atomic.Uint64

// pid is this process's pid for temporary names, read once (os.Getpid is a
// system call each time).
var pid = strconv.Itoa(os.Getpid())

// create makes name in dfd with O_EXCL and writes b to it with one write;
// on a failure after the create it removes the file.
func create(dfd int, name string, b []byte) error {
	fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return errno(err)
	}
	if err := writeClose(fd, b); err != nil {
		unix.Unlinkat(dfd, name, 0)
		return err
	}
	return nil
}

// writeClose writes b to fd with one write and closes fd.
func writeClose(fd int, b []byte) error {
	n, err := unix.Write(fd, b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// Read returns the record in bundle. It is an ErrNotFound error when the
// bundle holds none (or an empty file: a record being written), and an ErrInvalidArgument error when what is there is
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
	if fi.Mode().IsRegular() && fi.Size() == 0 {
		// Created by Write, which has not written it yet (or died first).
		return Record{}, fmt.Errorf("exit record %s/%s is empty: its writer had not finished: %w", bundle, FileName, errdefs.ErrNotFound)
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
