package guestinit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// ModuleLoader loads one kernel module from an open file. FinitModule is
// the real implementation; tests substitute a fake.
type ModuleLoader func(f *os.File) error

// FinitModule loads a module with the raw finit_module(2) syscall, with no
// parameters and no flags. A module that is already loaded (EEXIST) is not an
// error.
func FinitModule(f *os.File) error {
	err := unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// LoadModules loads the modules listed, one file name per line, in
// root/etc/kuasar/modules.load from root/lib/modules, in order. Blank lines
// and lines starting with '#' are skipped. A missing list means the kernel has
// everything built in and is not an error. Module names must be plain file
// names: a name containing '/' or ".." is refused, so the list cannot make the
// agent load files from outside /lib/modules.
func LoadModules(ctx context.Context, root string, load ModuleLoader) (loaded []string, err error) {
	list := filepath.Join(root, "etc/kuasar/modules.load")
	f, err := os.Open(list)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open module list: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		name := strings.TrimSpace(sc.Text())
		if name == "" || strings.HasPrefix(name, "#") {
			continue
		}
		if strings.ContainsRune(name, '/') || name == "." || name == ".." {
			return loaded, fmt.Errorf("%s line %d: %q is not a plain module file name; list file names that live in /lib/modules", list, line, name)
		}
		path := filepath.Join(root, "lib/modules", name)
		mf, err := os.Open(path)
		if err != nil {
			return loaded, fmt.Errorf("%s line %d: open module: %w (the guest builder must copy it to /lib/modules)", list, line, err)
		}
		err = load(mf)
		mf.Close()
		if err != nil {
			return loaded, fmt.Errorf("load module %s (%s line %d): %w; check that it matches the guest kernel and that modules it depends on are listed before it", name, list, line, err)
		}
		log.G(ctx).WithField("module", name).Debug("module loaded")
		loaded = append(loaded, name)
	}
	if err := sc.Err(); err != nil {
		return loaded, fmt.Errorf("read module list: %w", err)
	}
	return loaded, nil
}
