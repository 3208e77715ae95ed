package rig

import (
	"context"
	"net"
	"sync/atomic"

	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// EventSink is containerd's ttrpc events service as a sandboxer without
// containerd needs it: it receives the task events the sandboxer forwards
// (and counts them), so that measuring the sandboxer alone still includes
// publishing its events, as it does under containerd.
type EventSink struct {
	srv *ttrpc.Server
	l   net.Listener
	n   atomic.Int64
}

// ServeEvents serves the events service on the unix socket path.
func ServeEvents(path string) (*EventSink, error) {
	srv, err := ttrpc.NewServer()
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	s := &EventSink{srv: srv, l: l}
	eventsapi.RegisterTTRPCEventsService(srv, s)
	go srv.Serve(context.Background(), l)
	return s, nil
}

// Forward receives one event.
func (s *EventSink) Forward(context.Context, *eventsapi.ForwardRequest) (*emptypb.Empty, error) {
	s.n.Add(1)
	return &emptypb.Empty{}, nil
}

// Events is how many events were received.
func (s *EventSink) Events() int64 { return s.n.Load() }

// Close stops serving.
func (s *EventSink) Close() { s.srv.Close() }
