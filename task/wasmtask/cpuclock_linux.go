package wasmtask

import (
	"golang.org/x/sys/unix"
)

// threadCPUClock returns the clock id of thread tid's CPU time clock, as
// pthread_getcpuclockid would (MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)).
// The kernel lets any thread of the same process read it.
func threadCPUClock(tid int) int32 {
	return int32((^tid)<<3 | 6)
}

// threadCPUNanos reads thread tid's CPU time; 0 when the thread is gone.
func threadCPUNanos(tid int) uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(threadCPUClock(tid), &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano())
}
