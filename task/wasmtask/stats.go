package wasmtask

import (
	cg2 "github.com/containerd/cgroups/v3/cgroup2/stats"
)

// wasm32MaxMemory is the most linear memory a wasm32 instance can have, the
// effective limit when none is set.
const wasm32MaxMemory = 4 << 30

// metrics builds the cgroup v2 Metrics that containerd's CRI plugin decodes
// from a task's Stats: memory usage (= working set, = anon: linear memory
// is all anonymous and never file-backed), the limit, CPU time (usage only:
// a thread's CPU clock has no user/kernel split, so user_usec and
// system_usec stay zero rather than repeat the total) and the number of
// live instances as pids.
func metrics(mem, limit, cpuNanos, live uint64) *cg2.Metrics {
	if limit == 0 {
		limit = wasm32MaxMemory
	}
	return &cg2.Metrics{
		Pids:   &cg2.PidsStat{Current: live},
		CPU:    &cg2.CPUStat{UsageUsec: cpuNanos / 1000},
		Memory: &cg2.MemoryStat{Usage: mem, UsageLimit: limit, Anon: mem},
	}
}
