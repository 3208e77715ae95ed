package service

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaxEntropy is the most entropy bytes SetupSandbox accepts.
const MaxEntropy = 4096

// addEntropy credits b to the kernel's input pool (RNDADDENTROPY, full
// credit: the host's crypto/rand made it) and then reseeds the kernel's
// random generator at once (RNDRESEEDCRNG). Without the reseed a VM
// restored from a template would keep producing the template's random
// stream until the next scheduled reseed, the same in every clone.
func addEntropy(b []byte) error {
	f, err := os.OpenFile("/dev/random", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	req := make([]byte, 8+len(b))
	*(*int32)(unsafe.Pointer(&req[0])) = int32(8 * len(b))
	*(*int32)(unsafe.Pointer(&req[4])) = int32(len(b))
	copy(req[8:], b)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
		return fmt.Errorf("RNDADDENTROPY: %w", errno)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); errno != 0 {
		return fmt.Errorf("RNDRESEEDCRNG: %w", errno)
	}
	return nil
}

// WithEntropyHook replaces the call that feeds the guest's random pool
// (see SetupSandboxRequest.entropy), so SetupSandbox can be tested on a
// host.
func WithEntropyHook(f func([]byte) error) AgentOption {
	return func(a *AgentService) { a.addEntropy = f }
}
