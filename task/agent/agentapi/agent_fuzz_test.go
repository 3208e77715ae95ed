package agentapi

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// agentMessages are every message of the agent protocol, in declaration
// order: what host and guest decode from each other over the agent channel.
func agentMessages(tb testing.TB) []protoreflect.MessageType {
	var out []protoreflect.MessageType
	msgs := File_agent_proto.Messages()
	for i := 0; i < msgs.Len(); i++ {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(msgs.Get(i).FullName())
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, mt)
	}
	if len(out) == 0 {
		tb.Fatal("agent.proto declares no messages")
	}
	return out
}

// FuzzAgentMessages decodes hostile bytes as each agent protocol message
// (a guest is assumed hostile: the host decodes what it sends, and the
// guest what the host sends). Properties: no panic; whatever decodes
// re-encodes to bytes that decode to an equal message (unknown fields
// included), and proto.Size agrees with the encoding.
func FuzzAgentMessages(f *testing.F) {
	seeds := []proto.Message{
		&PingResponse{KernelRelease: "6.1.0-18-amd64", AgentVersion: "v0.1.0"},
		&SetupSandboxRequest{Hostname: "pod", DnsServers: []string{"10.0.0.10"}, DnsSearches: []string{"svc.cluster.local"},
			Mounts: []*Mount{{Source: "kuasar", Fstype: "9p", Target: "/run/kuasar/shared", Options: []string{"trans=virtio", "version=9p2000.L"}}}, ClockUnixNano: 1700000000000000000},
		&ReadStreamRequest{ContainerId: "c1", ExecId: "e1", Len: 32768},
		&ReadStreamResponse{Data: []byte("hello\n")},
		&WriteStreamRequest{ContainerId: "c1", Data: []byte{0, 1, 2}},
		&WriteStreamResponse{Len: 3},
		&CloseStdinRequest{ContainerId: "c1"},
	}
	for i, m := range seeds {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), b)
	}
	types := agentMessages(f)
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		mt := types[int(which)%len(types)]
		m := mt.New().Interface()
		if err := proto.Unmarshal(data, m); err != nil {
			return // refusing bytes is the decoder's job; not panicking is ours
		}
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatalf("%s decoded but does not encode: %v", mt.Descriptor().FullName(), err)
		}
		if proto.Size(m) != len(b) {
			t.Fatalf("%s: proto.Size %d, encoding %d bytes", mt.Descriptor().FullName(), proto.Size(m), len(b))
		}
		again := mt.New().Interface()
		if err := proto.Unmarshal(b, again); err != nil || !proto.Equal(m, again) {
			t.Fatalf("%s does not survive a round trip: %v", mt.Descriptor().FullName(), err)
		}
	})
}
