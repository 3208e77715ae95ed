package cloudhypervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// A template.Store keeps a template as a memory file (on a tmpfs where
// there is one) and one state file. A Cloud Hypervisor snapshot is a
// directory: its memory-ranges file is the memory file, and its other
// files (config.json, state.json) are packed into the state file as
// one JSON document.

// snapshotFormat names the state file's format.
const snapshotFormat = "kuasar-cloud-hypervisor-snapshot-1"

// maxPackedSnapshot bounds the files packed into a state file (Cloud
// Hypervisor's config.json and state.json hold a VM's config and device
// state: kilobytes).
const maxPackedSnapshot = 64 << 20

// packedSnapshot is the state file of a Cloud Hypervisor template.
type packedSnapshot struct {
	Format string            `json:"format"`
	Files  map[string][]byte `json:"files"`
}

// packSnapshot writes the files of snapshot directory dir other than
// MemoryName into the state file state (which exists).
func packSnapshot(dir, state string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	p := packedSnapshot{Format: snapshotFormat, Files: map[string][]byte{}}
	total := 0
	for _, e := range ents {
		if e.Name() == MemoryName {
			continue
		}
		if !e.Type().IsRegular() {
			return fmt.Errorf("snapshot %s holds %s, not a regular file: %w", dir, e.Name(), errdefs.ErrDataLoss)
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		if total += len(b); total > maxPackedSnapshot {
			return fmt.Errorf("snapshot %s: its files other than %s exceed %d bytes: %w", dir, MemoryName, maxPackedSnapshot, errdefs.ErrDataLoss)
		}
		p.Files[e.Name()] = b
	}
	if _, ok := p.Files[SnapshotConfigName]; !ok {
		return fmt.Errorf("snapshot %s has no %s: %w", dir, SnapshotConfigName, errdefs.ErrDataLoss)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(state, os.O_WRONLY|os.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// unpackSnapshot writes the files packed in the state file state into a
// new directory dir (mode 0700), with an empty MemoryName for the
// template's memory to be bound on. A state file that is not one
// packSnapshot wrote, or names a file outside dir, is refused with
// DataLoss (and dir removed).
func unpackSnapshot(state, dir string) (retErr error) {
	f, err := os.Open(state)
	if err != nil {
		return err
	}
	defer f.Close()
	var p packedSnapshot
	if err := json.NewDecoder(io.LimitReader(f, 2*maxPackedSnapshot)).Decode(&p); err != nil {
		return fmt.Errorf("template state file %s: %w: %w", state, err, errdefs.ErrDataLoss)
	}
	if p.Format != snapshotFormat {
		return fmt.Errorf("template state file %s: format %q, want %q: %w", state, p.Format, snapshotFormat, errdefs.ErrDataLoss)
	}
	if _, ok := p.Files[SnapshotConfigName]; !ok {
		return fmt.Errorf("template state file %s holds no %s: %w", state, SnapshotConfigName, errdefs.ErrDataLoss)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			os.RemoveAll(dir)
		}
	}()
	p.Files[MemoryName] = nil
	for name, b := range p.Files {
		if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
			return fmt.Errorf("template state file %s names %q: %w", state, name, errdefs.ErrDataLoss)
		}
		out, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		_, err = out.Write(b)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// moveSparse moves file src onto dst (which exists): a rename where both
// are on one file system, otherwise a copy of src's data extents (holes
// stay holes: a snapshot of a guest's memory is mostly holes) and the
// removal of src.
func moveSparse(src, dst string) error {
	err := os.Rename(src, dst)
	if !errors.Is(err, unix.EXDEV) {
		return err
	}
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	if err := copyExtents(in, out, st.Size()); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Remove(src)
}

// copyExtents copies the data extents of in (size bytes) to out at the
// same offsets, and gives out that size.
func copyExtents(in, out *os.File, size int64) error {
	if err := out.Truncate(size); err != nil {
		return err
	}
	fd := int(in.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole is left
		}
		if err != nil {
			// No SEEK_DATA: copy the rest densely.
			data = off
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if _, err := io.Copy(io.NewOffsetWriter(out, data), io.NewSectionReader(in, data, hole-data)); err != nil {
			return err
		}
		off = hole
	}
	return nil
}
