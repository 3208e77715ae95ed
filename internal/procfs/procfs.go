// Package procfs reads the per-process figures kuasar-go reports (sandbox
// metrics) and measures (benchmarks) from Linux's /proc.
package procfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// RSSBytes returns the resident set size of process pid (VmRSS in
// /proc/PID/status), in bytes. pid 0 means the calling process.
func RSSBytes(pid int) (uint64, error) {
	name := "self"
	if pid != 0 {
		name = strconv.Itoa(pid)
	}
	b, err := os.ReadFile("/proc/" + name + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if f := strings.Fields(v); len(f) >= 1 {
				kb, err := strconv.ParseUint(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%s/status (a kernel thread or an exited process): %w", name, errdefs.ErrNotFound)
}
