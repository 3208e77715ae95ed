package wazero

import (
	"fmt"
	"os"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/tetratelabs/wazero"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/fsroot"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/internal/wasip1"
)

// anonymousModule is the module configuration of every run with kuasar's
// WASI host: the host keeps arguments, environment, stdio and files itself
// (wasip1.Instance), so wazero's own system context stays empty and one
// configuration serves every run. Its clocks and random source are set
// only because wazero's defaults (deterministic fakes) cost a seeded
// math/rand source per instance, a quarter of a short run.
var anonymousModule = wazero.NewModuleConfig().WithName("").WithStartFunctions().
	WithRandSource(randSource).WithSysWalltime().WithSysNanotime()

// wasiInstance builds the WASI state of one run: the mounts opened as
// confined roots (each counted as an open file, as the guest's preopened
// fd, once the guest first uses it), stdio that a stopped run (done) no longer blocks on, arguments and
// environment. On error nothing stays open or counted.
func (m *compiledModule) wasiInstance(cfg wasm.RunConfig, files *openFiles, done <-chan struct{}) (_ *wasip1.Instance, err error) {
	env, err := guestEnv(cfg)
	if err != nil {
		return nil, err
	}
	for _, list := range [][]string{cfg.Args, env} {
		for _, a := range list {
			if strings.IndexByte(a, 0) >= 0 {
				return nil, fmt.Errorf("argument or environment entry %q holds a NUL byte, which WASI strings cannot: fix process.args / process.env: %w", a, errdefs.ErrInvalidArgument)
			}
		}
	}
	var preopens []wasip1.Preopen
	defer func() {
		if err != nil {
			for _, p := range preopens {
				if p.Root != nil {
					p.Root.Close()
				}
			}
		}
	}()
	for _, mnt := range cfg.Mounts {
		guest, err := checkMount(mnt)
		if err != nil {
			return nil, err
		}
		// Checked now (checkMount: a directory), opened (resolved once,
		// as a confined root) at the guest's first use of the fd: an
		// idle guest that never touches its files holds no descriptor
		// for them (an idle sandbox's rootfs counted against
		// RLIMIT_NOFILE at thousands of them).
		host := mnt.HostPath
		preopens = append(preopens, wasip1.Preopen{Open: func() (*fsroot.Root, error) { return fsroot.Open(host) }, GuestPath: guest, ReadOnly: mnt.ReadOnly})
	}
	wc := wasip1.Config{Args: cfg.Args, Env: env, Stdin: cfg.Stdin, Preopens: preopens, Files: files, Random: randSource, Blocking: cfg.Blocking,
		Terminal: [3]bool{isTerminal(cfg.Stdin), isTerminal(cfg.Stdout), isTerminal(cfg.Stderr)}}
	if cfg.Stdout != nil {
		wc.Stdout = newCancelWriter(cfg.Stdout, done)
	}
	if cfg.Stderr != nil {
		wc.Stderr = newCancelWriter(cfg.Stderr, done)
	}
	return wasip1.New(wc), nil
}

// isTerminal reports whether v is an *os.File open on a terminal.
func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	if !ok {
		return false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	tty := false
	rc.Control(func(fd uintptr) {
		_, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		tty = err == nil
	})
	return tty
}
