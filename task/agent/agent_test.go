package agent_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"

	"github.com/kuasar-go/kuasar/task/agent"
	"github.com/kuasar-go/kuasar/task/agent/agentapi"
)

// dial polls for the agent's socket until it answers or the deadline
// passes (Run creates it asynchronously).
func dial(t *testing.T, sock string) net.Conn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent socket %s never answered: %v", sock, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Run serves until its context is cancelled, then returns nil and removes
// its socket.
func TestRunStopsOnCancel(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, agent.Options{Listen: sock, Version: "test"}) }()

	client := ttrpc.NewClient(dial(t, sock))
	defer client.Close()
	r, err := agentapi.NewAgentClient(client).Ping(ctx, &agentapi.PingRequest{})
	if err != nil || r.AgentVersion != "test" {
		t.Fatalf("Ping = %v, %v; want version test", r, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket %s left behind after Run returned: %v", sock, err)
	}
}

// Run refuses a listen path it cannot use, and never removes a file that
// is not its socket.
func TestRunListenErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, listen string
		kind         func(error) bool
	}{
		{"regular file in the way", file, errdefs.IsAlreadyExists},
		{"missing parent directory", filepath.Join(dir, "missing", "agent.sock"), func(err error) bool { return err != nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := agent.Run(ctx, agent.Options{Listen: tc.listen})
			if err == nil || !tc.kind(err) {
				t.Fatalf("Run(Listen: %s) = %v, want an error of the right kind", tc.listen, err)
			}
		})
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Errorf("the file in the way was changed: %q, %v", b, err)
	}
}
