package agent_test

import (
	"os"
	"testing"

	"github.com/kuasar-go/kuasar/task/agent"
)

// TestMain lets the test binary act as the agent's set-up helper, as
// kuasar-task's main does.
func TestMain(m *testing.M) {
	if agent.IsHelper() {
		agent.RunHelper()
	}
	os.Exit(m.Run())
}
