// Package e2e runs kuasar-sandboxer under a real containerd v2.4.2 and drives
// it with crictl and containerd's Go client, next to the stock runc handler.
package e2e

import (
	"testing"

	"github.com/kuasar-go/kuasar/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
