package agentapi_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"

	"github.com/kuasar-go/kuasar/task/agent/agentapi"
)

// guest answers the agent service the way the guest agent does; embedding
// the interface leaves the methods this example does not call unimplemented.
type guest struct {
	agentapi.AgentService
	out []byte
}

func (g *guest) Ping(context.Context, *agentapi.PingRequest) (*agentapi.PingResponse, error) {
	return &agentapi.PingResponse{AgentVersion: "v0.1.0", KernelRelease: "6.1.0"}, nil
}

// ReadStdout returns at most r.Len bytes of what the container wrote and,
// at the end of the stream, fails with OutOfRange as the protocol says.
func (g *guest) ReadStdout(_ context.Context, r *agentapi.ReadStreamRequest) (*agentapi.ReadStreamResponse, error) {
	if len(g.out) == 0 {
		return nil, errgrpc.ToGRPC(fmt.Errorf("stdout of %s: %w", r.ContainerId, errdefs.ErrOutOfRange))
	}
	n := min(int(r.Len), len(g.out))
	data := g.out[:n]
	g.out = g.out[n:]
	return &agentapi.ReadStreamResponse{Data: data}, nil
}

// Example shows both ends of the protocol: the guest registers its
// AgentService on the ttrpc server that also serves the Task API, and the
// host's VM backend calls it through NewAgentClient over the VM channel
// (here a unix socket).
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "agentapi")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	l, err := net.Listen("unix", filepath.Join(dir, "agent.sock"))
	if err != nil {
		panic(err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		panic(err)
	}
	agentapi.RegisterAgentService(srv, &guest{out: []byte("hello from the guest\n")})
	go srv.Serve(ctx, l)
	defer srv.Close()

	conn, err := net.Dial("unix", filepath.Join(dir, "agent.sock"))
	if err != nil {
		panic(err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	agent := agentapi.NewAgentClient(client)
	r, err := agent.Ping(ctx, &agentapi.PingRequest{})
	if err != nil {
		panic(err)
	}
	fmt.Println(r.AgentVersion, r.KernelRelease)
	for {
		chunk, err := agent.ReadStdout(ctx, &agentapi.ReadStreamRequest{ContainerId: "c1", Len: 8})
		if errdefs.IsOutOfRange(errgrpc.ToNative(err)) {
			fmt.Println("end of stream")
			break
		} else if err != nil {
			panic(err)
		}
		fmt.Printf("%q\n", chunk.Data)
	}
	// Output:
	// v0.1.0 6.1.0
	// "hello fr"
	// "om the g"
	// "uest\n"
	// end of stream
}
