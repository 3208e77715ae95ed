// Package events publishes Task API events (/tasks/create, /tasks/exit, ...)
// from an in-process task service to containerd, in the order they happened
// and without blocking the Task API call or the exiting task on a slow or
// restarting containerd.
//
// containerd's CRI plugin marks a container exited when it sees /tasks/exit,
// so exits must reach containerd promptly and after the matching
// /tasks/start: a Queue delivers events one at a time, in order.
package events

import (
	"context"
	"sync"

	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/log"
)

// RemotePublisher is a Publisher connected to containerd's ttrpc socket. It
// must be closed when no longer needed.
type RemotePublisher interface {
	events.Publisher
	Close() error
}

// NewRemotePublisher returns a publisher that forwards events to the
// containerd events service at ttrpcAddress (containerd's ttrpc socket, e.g.
// /run/containerd/containerd.sock.ttrpc), exactly as a shim does. It reuses
// containerd's own shim publisher, which reconnects and retries failed events
// a few times. Events must carry a namespace in their context.
func NewRemotePublisher(ttrpcAddress string) (RemotePublisher, error) {
	return shim.NewPublisher(ttrpcAddress)
}

// Discard is a Publisher that drops every event, for tests and for running
// without containerd.
var Discard events.Publisher = discard{}

type discard struct{}

// Publish drops the event.
func (discard) Publish(context.Context, string, events.Event) error { return nil }

type item struct {
	ns    string
	topic string
	ev    events.Event
}

// Queue publishes events in order on a single goroutine, started when an
// event is queued and ended once the queue is empty: an idle queue (an idle
// sandbox's) parks no goroutine. Publish never blocks on the underlying
// publisher.
type Queue struct {
	pub events.Publisher

	mu       sync.Mutex
	items    []item
	running  bool // a run goroutine delivers items
	closed   bool
	done     chan struct{}
	doneOnce sync.Once

	// nsCtx is the context carrying namespace nsName that run last built:
	// a sandbox's events are all in one namespace, and building the context
	// (containerd's WithNamespace copies gRPC and ttrpc metadata) cost a
	// tenth of the queue's allocations. Only the run goroutine, of which
	// there is one at a time, uses them.
	nsName string
	nsCtx  context.Context
}

// NewQueue returns a queue in front of pub; nil pub means Discard:
// Publish then drops events at once (`kuasar run` has nobody to tell).
func NewQueue(pub events.Publisher) *Queue {
	q := &Queue{pub: pub, done: make(chan struct{})}
	if pub == nil {
		q.pub = Discard
		q.closed = true
		q.doneOnce.Do(func() { close(q.done) })
	}
	return q
}

// Publish queues event under topic for namespace ns. Events published after
// Close are dropped.
func (q *Queue) Publish(ns, topic string, event events.Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.items = append(q.items, item{ns: ns, topic: topic, ev: event})
	if !q.running {
		q.running = true
		go q.run()
	}
}

// run delivers the queued items in order until the queue is empty.
func (q *Queue) run() {
	for {
		q.mu.Lock()
		batch := q.items
		q.items = nil
		if len(batch) == 0 {
			q.running = false
			if q.closed {
				q.doneOnce.Do(func() { close(q.done) })
			}
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		for _, it := range batch {
			ctx := q.nsContext(it.ns)
			if err := q.pub.Publish(ctx, it.topic, it.ev); err != nil {
				log.G(ctx).WithError(err).WithField("topic", it.topic).Warn("publish task event")
			}
		}
	}
}

// nsContext returns a context carrying namespace ns, built once per
// namespace in a row.
func (q *Queue) nsContext(ns string) context.Context {
	if q.nsCtx == nil || q.nsName != ns {
		q.nsName, q.nsCtx = ns, namespaces.WithNamespace(context.Background(), ns)
	}
	return q.nsCtx
}

// Close delivers the events already queued, then stops the queue. It blocks
// until they were handed to the publisher or ctx is done.
func (q *Queue) Close(ctx context.Context) error {
	q.mu.Lock()
	q.closed = true
	if !q.running {
		q.doneOnce.Do(func() { close(q.done) })
	}
	q.mu.Unlock()
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
