package sandboxer

import (
	"math"
	"testing"

	cg2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"google.golang.org/protobuf/proto"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
)

// TestMetricsFieldsCarryTheirNames encodes each kind of backend figures and
// checks every cgroup v2 field: a figure the backend does not know is zero,
// never another figure under a wrong name (total CPU in user_usec, the whole
// resident set in anon, as before).
func TestMetricsFieldsCarryTheirNames(t *testing.T) {
	tests := []struct {
		name  string
		m     backend.Metrics
		limit uint64
		cpu   *cg2.CPUStat
		mem   *cg2.MemoryStat
		pids  uint64
	}{
		{
			name:  "vm: VMM split from /proc",
			m:     backend.Metrics{MemoryBytes: 300 << 20, AnonBytes: 40 << 20, FileBytes: 10 << 20, ShmemBytes: 250 << 20, CPUNanos: 7_500_000_000, UserNanos: 5_000_000_000, SystemNanos: 2_500_000_000, Tasks: 2},
			limit: 512 << 20,
			cpu:   &cg2.CPUStat{UsageUsec: 7_500_000, UserUsec: 5_000_000, SystemUsec: 2_500_000},
			mem:   &cg2.MemoryStat{Usage: 300 << 20, UsageLimit: 512 << 20, Anon: 40 << 20, File: 10 << 20, Shmem: 250 << 20},
			pids:  2,
		},
		{
			name: "wasm: linear memory is anon, CPU has no split",
			m:    backend.Metrics{MemoryBytes: 128 << 10, AnonBytes: 128 << 10, CPUNanos: 3_000_000, Tasks: 1},
			cpu:  &cg2.CPUStat{UsageUsec: 3_000},
			mem:  &cg2.MemoryStat{Usage: 128 << 10, UsageLimit: math.MaxUint64, Anon: 128 << 10},
			pids: 1,
		},
		{
			name: "backend without any split",
			m:    backend.Metrics{MemoryBytes: 1 << 20, CPUNanos: 1_000_000},
			cpu:  &cg2.CPUStat{UsageUsec: 1_000},
			mem:  &cg2.MemoryStat{Usage: 1 << 20, UsageLimit: math.MaxUint64},
		},
		{
			name: "no backend yet",
			cpu:  &cg2.CPUStat{},
			mem:  &cg2.MemoryStat{UsageLimit: math.MaxUint64},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := toCgroup2(tt.m, tt.limit)
			if !proto.Equal(got.CPU, tt.cpu) {
				t.Errorf("cpu %+v, want %+v", got.CPU, tt.cpu)
			}
			if !proto.Equal(got.Memory, tt.mem) {
				t.Errorf("memory %+v, want %+v", got.Memory, tt.mem)
			}
			if got.Pids.Current != tt.pids {
				t.Errorf("pids %d, want %d", got.Pids.Current, tt.pids)
			}
		})
	}
}
