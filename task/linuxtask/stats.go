package linuxtask

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

// clockTicks is USER_HZ, fixed at 100 on Linux for /proc/<pid>/stat.
const clockTicks = 100

// procStats sums CPU time and resident memory of pids from /proc into the
// cgroup v2 Metrics message containerd's CRI understands. The guest does not
// give containers cgroups of their own, so only these fields are filled:
// Pids.Current, CPU.{Usage,User,System}Usec, Memory.{Usage,Anon}.
func procStats(pids []int) (*anypb.Any, error) {
	m := &stats.Metrics{
		Pids:   &stats.PidsStat{Current: uint64(len(pids))},
		CPU:    &stats.CPUStat{},
		Memory: &stats.MemoryStat{},
	}
	page := uint64(os.Getpagesize())
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // exited meanwhile
		}
		// Fields after the command name, which is in parentheses and may
		// contain spaces: state is field 3, utime 14, stime 15.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		m.CPU.UserUsec += ut * 1e6 / clockTicks
		m.CPU.SystemUsec += st * 1e6 / clockTicks
		if sm, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid)); err == nil {
			if g := strings.Fields(string(sm)); len(g) > 1 {
				rss, _ := strconv.ParseUint(g[1], 10, 64)
				m.Memory.Usage += rss * page
				m.Memory.Anon += rss * page
			}
		}
	}
	m.CPU.UsageUsec = m.CPU.UserUsec + m.CPU.SystemUsec
	a, err := typeurl.MarshalAnyToProto(m)
	if err != nil {
		return nil, fmt.Errorf("marshal stats: %w", err)
	}
	return a, nil
}
