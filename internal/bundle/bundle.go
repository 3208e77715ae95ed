// Package bundle reads the OCI runtime spec (config.json) of a container
// bundle, once for every host-side reader: the sandboxer's routing, the Wasm
// task service and the Task API forwarder of the agent backends.
//
// A bundle is written by containerd, but the files in it are not all
// trusted: an image can put a symlink or a FIFO where a careless reader
// expects a file, and a VM guest can write below the shared directory.
// ReadSpec therefore resolves config.json inside the bundle directory
// (internal/fsroot: a symlink cannot lead out of it), refuses anything but a
// regular file without blocking on it, and bounds what it reads.
package bundle

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/fsroot"
)

// ConfigFile is the name of the runtime spec in a bundle.
const ConfigFile = "config.json"

// MaxSpecSize bounds config.json. containerd's specs are a few KiB; CRI
// ones with many mounts and environment variables stay well below 1 MiB.
// The bound keeps a hostile bundle from making the reader allocate without
// limit.
const MaxSpecSize = 4 << 20

// ReadSpec reads and decodes dir/config.json. Errors wrap
// errdefs.ErrNotFound when the bundle or its config.json does not exist, and
// errdefs.ErrInvalidArgument when config.json is not a regular file, is
// larger than MaxSpecSize or is not a runtime-spec document.
func ReadSpec(dir string) (*specs.Spec, error) {
	b, err := readConfig(dir)
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("bundle %s: %s is not a runtime-spec document: %w: %w", dir, ConfigFile, err, errdefs.ErrInvalidArgument)
	}
	return &s, nil
}

func readConfig(dir string) ([]byte, error) {
	kind := func(err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return errdefs.ErrNotFound
		}
		return errdefs.ErrInvalidArgument
	}
	// O_NONBLOCK: a FIFO planted as config.json must not hang the open.
	// The descriptor is read with read(2) directly (an *os.File would
	// register it with Go's poller, four fcntl and a failing epoll_ctl
	// for a regular file): this is on every task's Create.
	const flags = unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC
	p := filepath.Join(dir, ConfigFile)
	// The directory's path is resolved normally either way (it is
	// trusted); a config.json that is not a symlink is the file the
	// confined lookup below would open, so it is opened directly, saving
	// that lookup's directory descriptor (two system calls). Only a
	// symlink (or any failure) takes the confined lookup.
	fd, err := unix.Open(p, flags|unix.O_NOFOLLOW, 0)
	if err != nil {
		r, err := fsroot.Open(dir)
		if err != nil {
			return nil, fmt.Errorf("opening bundle %s: %w: %w", dir, err, kind(err))
		}
		fd, err = r.OpenFd(ConfigFile, flags, 0)
		r.Close()
		if err != nil {
			return nil, fmt.Errorf("bundle %s has no readable %s: %w: %w", dir, ConfigFile, err, kind(err))
		}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s is a %v, not a regular file: %w", p, fs.FileMode(st.Mode&unix.S_IFMT), errdefs.ErrInvalidArgument)
	}
	tooLarge := func() error {
		return fmt.Errorf("%s is larger than %d bytes; a runtime spec that large is refused: %w", p, MaxSpecSize, errdefs.ErrInvalidArgument)
	}
	if st.Size > MaxSpecSize {
		return nil, tooLarge()
	}
	// One read for a file that did not grow since fstat: the buffer has
	// a byte to spare to see the end of the file, and a read of a regular
	// file that returns less than asked has reached its end (no second
	// read returning 0: this is on every task's Create).
	b := make([]byte, 0, max(st.Size+1, 512))
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		want := cap(b) - len(b)
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		b = b[:len(b)+n]
		if len(b) > MaxSpecSize {
			return nil, tooLarge()
		}
		if n < want {
			break
		}
	}
	return b, nil
}
