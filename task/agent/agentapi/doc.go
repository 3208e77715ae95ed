// Package agentapi holds the kuasar.agent.v1.Agent protocol spoken between
// the host-side micro-VM forwarder and the guest agent (kuasar-task), and its
// generated protobuf and ttrpc stubs.
//
// The guest serves it as a ttrpc server next to containerd.task.v3.Task on the
// one agent channel connection; the host uses NewAgentClient. Regenerate
// the stubs with `go generate ./task/agent/agentapi` (needs protoc,
// protoc-gen-go v1.36.12 and protoc-gen-go-ttrpc v1.2.10 on PATH).
package agentapi

//go:generate protoc -I . -I /usr/include --go_out=. --go_opt=paths=source_relative --go-ttrpc_out=. --go-ttrpc_opt=paths=source_relative agent.proto

// protoc-gen-go-ttrpc puts its header right above the package clause, which
// makes it this package's doc comment; a blank line after it keeps the doc
// above.
//go:generate sed -i "s|^// source: agent.proto$|&\\n|" agent_ttrpc.pb.go
