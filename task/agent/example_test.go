package agent_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/kuasar-go/kuasar/task/agent"
	"github.com/kuasar-go/kuasar/task/agent/agentapi"
)

// Example runs the agent outside a VM on a unix socket, as
// `kuasar-task --listen` does for development, and pings it the way the
// host's VM backend does over the VM channel.
func Example() {
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "agent.sock")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, agent.Options{Listen: sock, Version: "v0.1.0"}) }()

	// The socket appears once Run listens: poll for it with a deadline.
	var conn net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		if conn, err = net.Dial("unix", sock); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		panic(err)
	}
	client := ttrpc.NewClient(conn)
	r, err := agentapi.NewAgentClient(client).Ping(ctx, &agentapi.PingRequest{})
	if err != nil {
		panic(err)
	}
	fmt.Println(r.AgentVersion)
	client.Close()

	cancel()
	fmt.Println(<-done)
	// Output:
	// v0.1.0
	// <nil>
}
