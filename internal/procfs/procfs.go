// Package procfs reads the per-process figures kuasar-go reports (sandbox
// metrics) and measures (benchmarks) from Linux's /proc.
package procfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// RSSBytes returns the resident set size of process pid (VmRSS in
// /proc/PID/status), in bytes. pid 0 means the calling process.
func RSSBytes(pid int) (uint64, error) {
	m, err := Memory(pid)
	return m.RSS, err
}

// Mem is a process's resident set and how it splits by kind of page
// (/proc/PID/status; the three parts add up to RSS).
type Mem struct {
	// RSS is VmRSS: every resident page of the process.
	RSS uint64
	// Anon is RssAnon: private anonymous pages (heap, a VMM's private
	// guest RAM).
	Anon uint64
	// File is RssFile: pages of mapped files (binaries, libraries).
	File uint64
	// Shmem is RssShmem: shared memory and tmpfs/memfd pages (a VMM's
	// guest RAM when it is shared with virtiofsd).
	Shmem uint64
}

// Memory reads process pid's resident set and its split, in bytes. pid 0
// means the calling process. A process without memory (a kernel thread, or
// one that has exited) is an ErrNotFound error.
func Memory(pid int) (Mem, error) {
	name := procName(pid)
	b, err := os.ReadFile("/proc/" + name + "/status")
	if err != nil {
		return Mem{}, err
	}
	return parseStatus(string(b), name)
}

// parseStatus reads the Rss lines of a /proc/PID/status text.
func parseStatus(s, name string) (Mem, error) {
	var m Mem
	found := false
	for _, line := range strings.Split(s, "\n") {
		key, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch key {
		case "VmRSS":
			dst, found = &m.RSS, true
		case "RssAnon":
			dst = &m.Anon
		case "RssFile":
			dst = &m.File
		case "RssShmem":
			dst = &m.Shmem
		default:
			continue
		}
		f := strings.Fields(v)
		if len(f) < 1 {
			return Mem{}, fmt.Errorf("/proc/%s/status: empty %s line", name, key)
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return Mem{}, fmt.Errorf("/proc/%s/status: %s: %w", name, key, err)
		}
		*dst = kb * 1024
	}
	if !found {
		return Mem{}, fmt.Errorf("no VmRSS in /proc/%s/status (a kernel thread or an exited process): %w", name, errdefs.ErrNotFound)
	}
	return m, nil
}

// userHZ is the unit of the CPU times in /proc/PID/stat (USER_HZ, which
// the kernel ABI fixes at 100 on every architecture Go runs Linux on).
const userHZ = 100

// CPUTimes returns the CPU time process pid has spent in user mode and in
// the kernel (utime and stime of /proc/PID/stat, every thread included),
// with the 10 ms resolution the kernel reports them in. pid 0 means the
// calling process.
func CPUTimes(pid int) (user, system time.Duration, err error) {
	name := procName(pid)
	b, err := os.ReadFile("/proc/" + name + "/stat")
	if err != nil {
		return 0, 0, err
	}
	return parseStat(string(b), name)
}

// parseStat reads utime and stime from a /proc/PID/stat line. The command
// (field 2) is in parentheses and may hold spaces and parentheses, so the
// fields are counted from the last ')'.
func parseStat(s, name string) (user, system time.Duration, err error) {
	j := strings.LastIndexByte(s, ')')
	if j < 0 {
		return 0, 0, fmt.Errorf("/proc/%s/stat has no command field: %q", name, s)
	}
	f := strings.Fields(s[j+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%s/stat has %d fields after the command, want at least 13", name, len(f))
	}
	ut, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%s/stat utime: %w", name, err)
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%s/stat stime: %w", name, err)
	}
	const tick = time.Second / userHZ
	return time.Duration(ut) * tick, time.Duration(st) * tick, nil
}

func procName(pid int) string {
	if pid == 0 {
		return "self"
	}
	return strconv.Itoa(pid)
}
