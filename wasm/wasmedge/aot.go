//go:build wasmedge

package wasmedge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	"github.com/second-state/WasmEdge-go/wasmedge"
	"golang.org/x/sys/unix"
)

// aotCache holds AOT-compiled modules on disk, one file per module digest,
// under a directory named after WasmEdge's version (native code of one
// version is not loadable by another).
//
// AOT compilation of a large module takes tens of seconds, so:
//   - it happens once per digest and host: a process takes an exclusive
//     flock on <digest>.lock before compiling, and whoever gets the lock
//     second finds the file done;
//   - a cache entry is never half-written: the compiler writes a temporary
//     file in the same directory, which is fsynced and renamed into place;
//     a crash leaves only a temporary file, removed by the next compile of
//     the same digest.
type aotCache struct {
	dir string
}

func newAOTCache(root string) (*aotCache, error) {
	dir := filepath.Join(root, "wasmedge-"+wasmedge.GetVersion())
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("wasmedge AOT cache %s: %w: set a writable cache directory: %w", dir, err, errdefs.ErrInvalidArgument)
	}
	return &aotCache{dir: dir}, nil
}

// aot returns the path of module's AOT shared object, compiling it first if
// no process did yet.
func (c *aotCache) aot(ctx context.Context, dgst digest.Digest, module []byte) (string, error) {
	return c.entry(ctx, dgst, ".so", func(tmp string) error {
		conf := wasmedge.NewConfigure(wasmedge.WASI)
		defer conf.Release()
		conf.SetCompilerOptimizationLevel(wasmedge.CompilerOptLevel_O2)
		conf.SetCompilerOutputFormat(wasmedge.CompilerOutputFormat_Native)
		comp := wasmedge.NewCompilerWithConfig(conf)
		defer comp.Release()
		start := time.Now()
		if err := comp.CompileBuffer(module, tmp); err != nil {
			return fmt.Errorf("wasmedge AOT compile of %s: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
		}
		log.G(ctx).WithField("module", dgst).WithField("took", time.Since(start)).Debug("wasmedge: module AOT-compiled")
		return nil
	})
}

// wasm returns the path of module's bytes, for the interpreter.
func (c *aotCache) wasm(ctx context.Context, dgst digest.Digest, module []byte) (string, error) {
	return c.entry(ctx, dgst, ".wasm", func(tmp string) error {
		return os.WriteFile(tmp, module, 0o600)
	})
}

func (c *aotCache) entry(ctx context.Context, dgst digest.Digest, ext string, build func(tmp string) error) (string, error) {
	if err := dgst.Validate(); err != nil {
		return "", fmt.Errorf("wasmedge AOT cache: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	base := filepath.Join(c.dir, dgst.Algorithm().String()+"-"+dgst.Encoded())
	final := base + ext
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	lock, err := os.OpenFile(base+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", fmt.Errorf("wasmedge AOT cache lock: %w", err)
	}
	defer lock.Close()
	if err := flock(ctx, int(lock.Fd())); err != nil {
		return "", err
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	if _, err := os.Stat(final); err == nil {
		return final, nil // another process compiled it while we waited
	}
	tmp := fmt.Sprintf("%s.tmp-%d%s", base, os.Getpid(), ext)
	os.Remove(tmp)
	if err := build(tmp); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := syncFile(tmp); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("wasmedge AOT cache: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("wasmedge AOT cache: %w", err)
	}
	return final, nil
}

// flock takes an exclusive lock on fd, giving up when ctx ends.
func flock(ctx context.Context, fd int) error {
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("wasmedge AOT cache lock: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for another process's AOT compilation: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func syncFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
