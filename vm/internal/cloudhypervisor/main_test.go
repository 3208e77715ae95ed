package cloudhypervisor_test

import (
	"testing"

	"github.com/kuasar-go/kuasar/internal/testenv/chfake"
)

// TestMain serves as the fake Cloud Hypervisor (vm/internal/testenv/chfake)
// when the test binary is re-executed as one.
func TestMain(m *testing.M) { chfake.Main(m) }
