package backend_test

import (
	"os"
	"testing"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
)

// TestAddProcess reads this test process's own figures: a live process has
// a resident set, split by kind, and CPU time that is the sum of its parts;
// a pid that names no process is an error and leaves the figures alone.
func TestAddProcess(t *testing.T) {
	m := backend.Metrics{Tasks: 3}
	if err := m.AddProcess(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if m.MemoryBytes == 0 || m.AnonBytes == 0 || m.AnonBytes > m.MemoryBytes {
		t.Errorf("memory %d, anon %d: want a resident set with anonymous pages in it", m.MemoryBytes, m.AnonBytes)
	}
	if m.CPUNanos == 0 || m.CPUNanos != m.UserNanos+m.SystemNanos {
		t.Errorf("cpu %d, user %d, system %d: want user+system", m.CPUNanos, m.UserNanos, m.SystemNanos)
	}
	if m.Tasks != 3 {
		t.Errorf("tasks %d: AddProcess changed a field it does not own", m.Tasks)
	}
	var none backend.Metrics
	if err := none.AddProcess(1 << 30); err == nil {
		t.Error("AddProcess of a pid that names no process succeeded")
	}
	if none != (backend.Metrics{}) {
		t.Errorf("figures after a failed read: %+v", none)
	}
}
