package service_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/containerd/ttrpc"
	taskapi "github.com/kuasar-go/kuasar/task/agent/internal/taskpb"

	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/task/agent/internal/guestinit"
	"github.com/kuasar-go/kuasar/task/agent/internal/service"
)

// Example serves the Task API and the agent service on one ttrpc server, as
// kuasar-task does on the VM channel, and pings it over a unix socket.
func Example() {
	ctx := context.Background()
	tasks := service.New(guestinit.GlobalReaper(ctx))
	srv, _ := ttrpc.NewServer()
	taskapi.RegisterTTRPCTaskService(srv, tasks)
	agentapi.RegisterAgentService(srv, service.NewAgentService(tasks, service.WithVersion("v0.1.0")))
	dir, _ := os.MkdirTemp("", "agent")
	defer os.RemoveAll(dir)
	l, _ := net.Listen("unix", filepath.Join(dir, "agent.sock"))
	go srv.Serve(ctx, l)
	defer srv.Close()

	conn, _ := net.Dial("unix", filepath.Join(dir, "agent.sock"))
	client := ttrpc.NewClient(conn)
	defer client.Close()
	r, err := agentapi.NewAgentClient(client).Ping(ctx, &agentapi.PingRequest{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.AgentVersion)
	// Output: v0.1.0
}
