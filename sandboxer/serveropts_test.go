package sandboxer

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"

	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// pingCounter is a listener whose connections count the HTTP/2 PING
// frames the server sends on its own (not the ACKs of the client's).
type pingCounter struct {
	net.Listener
	mu    sync.Mutex
	pings int
}

func (l *pingCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &frameConn{Conn: c, l: l}, nil
}

// frameConn parses the HTTP/2 frames written to it (after the server's
// part of the preface, which is a SETTINGS frame: no preface bytes).
type frameConn struct {
	net.Conn
	l   *pingCounter
	buf []byte
}

func (c *frameConn) Write(b []byte) (int, error) {
	c.buf = append(c.buf, b...)
	for len(c.buf) >= 9 {
		n := int(c.buf[0])<<16 | int(c.buf[1])<<8 | int(c.buf[2])
		if len(c.buf) < 9+n {
			break
		}
		const framePing, flagAck = 0x6, 0x1
		if c.buf[3] == framePing && c.buf[4]&flagAck == 0 {
			c.l.mu.Lock()
			c.l.pings++
			c.l.mu.Unlock()
		}
		c.buf = c.buf[9+n:]
	}
	return c.Conn.Write(b)
}

// TestServerOptionsSendNoPings: served with ServerOptions, the Sandbox
// API sends no PING of its own however many calls carry data (gRPC's
// bandwidth estimation, which costs a round trip of frames and a wake-up
// per call, is off); served with gRPC's defaults it does, which is what
// makes this test able to fail.
func TestServerOptionsSendNoPings(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      []grpc.ServerOption
		wantPings bool
	}{
		{"ServerOptions", ServerOptions(), false},
		{"gRPC defaults", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(shortTempDir(t), "s.sock")
			ul, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			l := &pingCounter{Listener: ul}
			gs := grpc.NewServer(tc.opts...)
			api.RegisterControllerServer(gs, &Service{sandboxes: map[string]*sandbox{}})
			go gs.Serve(l)
			defer gs.Stop()
			conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			client := api.NewControllerClient(conn)
			for range 20 {
				// NotFound: the request's data frame is what counts.
				client.Status(context.Background(), &api.ControllerStatusRequest{SandboxID: "no-such-sandbox"})
			}
			l.mu.Lock()
			pings := l.pings
			l.mu.Unlock()
			if (pings > 0) != tc.wantPings {
				t.Fatalf("server sent %d PING frames over 20 calls; want some: %v", pings, tc.wantPings)
			}
		})
	}
}
