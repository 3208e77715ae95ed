// Package orphan is a benchmark suite for the harness's own test
// (TestInterruptKillsEverything): it starts processes that outlive an
// interrupted `go test` the way QEMU and containerd do, then blocks.
package orphan

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkOrphan starts a `sleep` in its own session whose parent exits at
// once (an orphan, like a daemonised VMM), a `sleep` that is its direct child,
// a temporary directory with, as root, a tmpfs mounted on it, writes
// "pid pid dir" to $ORPHAN_REPORT and then blocks until it is killed.
func BenchmarkOrphan(b *testing.B) {
	out, err := exec.Command("sh", "-c", "setsid sleep 3600 </dev/null >/dev/null 2>&1 & echo $!").Output()
	if err != nil {
		b.Fatal(err)
	}
	orphan := strings.TrimSpace(string(out))
	child := exec.Command("sleep", "3600")
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "orphan")
	if err != nil {
		b.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
			b.Fatal(err)
		}
	}
	report := fmt.Sprintf("%s %d %s\n", orphan, child.Process.Pid, dir)
	path := os.Getenv("ORPHAN_REPORT")
	if err := os.WriteFile(path+".tmp", []byte(report), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		b.Fatal(err)
	}
	time.Sleep(time.Hour) // a long benchmark, interrupted by the test
}
