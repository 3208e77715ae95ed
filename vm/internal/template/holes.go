package template

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// pageSize is the unit PunchZeroPages looks at: the guest's and the
// host's page.
const pageSize = 4096

// PunchZeroPages turns every page-aligned run of zero bytes in the data
// regions of the file at path into a hole, and returns how many bytes it
// freed. The file reads the same afterwards (a hole reads as zeros), but
// holds less data: a guest's memory is about a third zero pages when it
// is saved (pages its kernel zeroed and never wrote), and every process
// that restores a clone copies the template's data into a sealed memfd
// (SealedCopy), which skips holes. A file system that cannot punch holes
// (EOPNOTSUPP) is left as it is.
//
// Nothing may map the file writably meanwhile (the template's VMM has
// exited).
func PunchZeroPages(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("%s is not a regular file", path)
	}
	size := fi.Size()
	if size == 0 {
		return 0, nil
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, fmt.Errorf("mapping %s: %w", path, err)
	}
	defer unix.Munmap(m)
	var zero [pageSize]byte
	var freed int64
	punch := func(start, end int64) error {
		if start == end {
			return nil
		}
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, start, end-start); err != nil {
			return err
		}
		freed += end - start
		return nil
	}
	for off := int64(0); off < size; {
		start, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return freed, err
		}
		end, err := unix.Seek(int(f.Fd()), start, unix.SEEK_HOLE)
		if err != nil {
			return freed, err
		}
		// Data regions start and end on page boundaries on tmpfs; the
		// partial pages at either end of another file system's regions
		// are left alone.
		p := (start + pageSize - 1) &^ (pageSize - 1)
		run := int64(-1) // start of the current run of zero pages
		for ; p+pageSize <= end; p += pageSize {
			if bytes.Equal(m[p:p+pageSize], zero[:]) {
				if run < 0 {
					run = p
				}
				continue
			}
			if run >= 0 {
				if err := punch(run, p); err != nil {
					return freed, punchErr(path, err)
				}
				run = -1
			}
		}
		if run >= 0 {
			if err := punch(run, p); err != nil {
				return freed, punchErr(path, err)
			}
		}
		off = end
	}
	return freed, nil
}

// punchErr is nil for a file system without hole punching.
func punchErr(path string, err error) error {
	if errors.Is(err, unix.EOPNOTSUPP) {
		return nil
	}
	return fmt.Errorf("punching zero pages out of %s: %w", path, err)
}
