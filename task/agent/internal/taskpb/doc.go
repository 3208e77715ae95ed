// Package taskpb is containerd's Task API v3 (containerd.task.v3.Task) for
// the guest agent: the same messages and service, wire-compatible, generated
// for ttrpc only.
//
// containerd's Go package for this API
// (github.com/containerd/containerd/api/runtime/task/v3) also holds its gRPC
// stubs, so importing it links google.golang.org/grpc's whole RPC runtime
// (about 170 packages) into the agent, which only ever speaks ttrpc. Here
// the messages live under the protobuf package kuasar.agent.task.v3 (field
// numbers and types identical; protobuf's wire encoding carries no message
// names) and only ttrpc stubs are generated for the service, under
// containerd's name: the host side forwards with containerd's client, the
// agent serves with these types, and a binary may link both (the full names
// differ, so nothing is registered twice). TestWireCompatible compares
// every message and method with containerd's descriptors.
//
// grpc/codes and grpc/status still come with github.com/containerd/ttrpc
// itself (its status type is gRPC's) and with errdefs/pkg/errgrpc: small
// packages without the gRPC transport.
package taskpb

//go:generate ./gen.sh
