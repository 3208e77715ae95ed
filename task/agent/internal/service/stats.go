package service

import (
	"fmt"

	"github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kuasar-go/kuasar/internal/procfs"
)

// procStats sums CPU time and resident memory of pids from /proc into the
// cgroup v2 Metrics message containerd's CRI understands. The guest does not
// give containers cgroups of their own, so only these fields are filled:
// Pids.Current, CPU.{Usage,User,System}Usec and Memory.{Usage,Anon,File,Shmem}
// (the resident set and its split by kind of page, from /proc/PID/status).
func procStats(pids []int) (*anypb.Any, error) {
	m := &stats.Metrics{
		Pids:   &stats.PidsStat{Current: uint64(len(pids))},
		CPU:    &stats.CPUStat{},
		Memory: &stats.MemoryStat{},
	}
	for _, pid := range pids {
		user, sys, err := procfs.CPUTimes(pid)
		if err != nil {
			continue // exited meanwhile
		}
		m.CPU.UserUsec += uint64(user.Microseconds())
		m.CPU.SystemUsec += uint64(sys.Microseconds())
		if mem, err := procfs.Memory(pid); err == nil {
			m.Memory.Usage += mem.RSS
			m.Memory.Anon += mem.Anon
			m.Memory.File += mem.File
			m.Memory.Shmem += mem.Shmem
		}
	}
	m.CPU.UsageUsec = m.CPU.UserUsec + m.CPU.SystemUsec
	a, err := typeurl.MarshalAnyToProto(m)
	if err != nil {
		return nil, fmt.Errorf("marshal stats: %w", err)
	}
	return a, nil
}
