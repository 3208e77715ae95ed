package events_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	ttrpcevents "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/emptypb"

	taskevents "github.com/kuasar-go/kuasar/task/events"
)

// slow records topics, taking a while per event, as a busy containerd would;
// with a gate, every Publish first waits until the gate is closed (a
// containerd that does not answer at all).
type slow struct {
	mu     sync.Mutex
	topics []string
	delay  time.Duration
	gate   chan struct{}
}

func (s *slow) Publish(ctx context.Context, topic string, _ events.Event) error {
	if s.gate != nil {
		<-s.gate
	}
	time.Sleep(s.delay)
	ns, _ := namespaces.Namespace(ctx)
	s.mu.Lock()
	s.topics = append(s.topics, ns+topic)
	s.mu.Unlock()
	return nil
}

func TestQueueKeepsOrderWithoutBlocking(t *testing.T) {
	// The publisher is stuck until every Publish returned: a Publish
	// that waited for it would never return (the deadline bounds the test,
	// it measures nothing).
	pub := &slow{delay: 2 * time.Millisecond, gate: make(chan struct{})}
	q := taskevents.NewQueue(pub)
	var want []string
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := range 50 {
			topic := fmt.Sprintf("/tasks/%d", i)
			q.Publish("ns1", topic, &eventstypes.TaskStart{})
			want = append(want, "ns1"+topic)
		}
	}()
	select {
	case <-published:
	case <-time.After(time.Minute):
		t.Fatal("Publish blocked on a publisher that does not return")
	}
	close(pub.gate)
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if fmt.Sprint(pub.topics) != fmt.Sprint(want) {
		t.Errorf("delivered %v, want %v", pub.topics, want)
	}
	q.Publish("ns1", "/late", &eventstypes.TaskStart{}) // dropped, must not panic
}

// TestQueueNamespacePerEvent checks that every event is delivered in its own
// namespace when a queue's events change namespace (the queue reuses the
// context of the namespace before).
func TestQueueNamespacePerEvent(t *testing.T) {
	for _, nss := range [][]string{
		{"a"},
		{"a", "a", "a"},
		{"a", "b", "b", "a", "c", "a"},
	} {
		pub := &slow{}
		q := taskevents.NewQueue(pub)
		var want []string
		for i, ns := range nss {
			topic := fmt.Sprintf("/tasks/%d", i)
			q.Publish(ns, topic, &eventstypes.TaskStart{})
			want = append(want, ns+topic)
		}
		if err := q.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(pub.topics) != fmt.Sprint(want) {
			t.Errorf("namespaces %v: delivered %v, want %v", nss, pub.topics, want)
		}
	}
}

// TestIdleQueuesHoldNoGoroutine checks that a queue's delivery goroutine
// runs only while events wait (one per idle sandbox counted at thousands),
// and that events published across idle periods still arrive in order.
func TestIdleQueuesHoldNoGoroutine(t *testing.T) {
	const queues = 100
	pub := &slow{}
	base := runtime.NumGoroutine()
	qs := make([]*taskevents.Queue, queues)
	var want []string
	for round := range 3 {
		for i := range qs {
			if qs[i] == nil {
				qs[i] = taskevents.NewQueue(pub)
			}
			if i == 0 {
				topic := fmt.Sprintf("/tasks/%d", round)
				qs[0].Publish("ns", topic, &eventstypes.TaskStart{})
				want = append(want, "ns"+topic)
			}
		}
		// The goroutine ends once its queue is empty: poll with a deadline.
		for deadline := time.Now().Add(time.Minute); runtime.NumGoroutine() > base; {
			if time.Now().After(deadline) {
				t.Fatalf("%d idle queues hold %d goroutines, want none", queues, runtime.NumGoroutine()-base)
			}
			time.Sleep(time.Millisecond) // polling interval
		}
	}
	for _, q := range qs {
		if err := q.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if fmt.Sprint(pub.topics) != fmt.Sprint(want) {
		t.Errorf("delivered %v, want %v", pub.topics, want)
	}
}

// forwarder is containerd's ttrpc events service, as the sandboxer reaches it.
type forwarder struct {
	mu   sync.Mutex
	got  []*ttrpcevents.ForwardRequest
	seen chan struct{}
}

func (f *forwarder) Forward(_ context.Context, r *ttrpcevents.ForwardRequest) (*emptypb.Empty, error) {
	f.mu.Lock()
	f.got = append(f.got, r)
	f.mu.Unlock()
	f.seen <- struct{}{}
	return &emptypb.Empty{}, nil
}

func TestRemotePublisherForwardsToContainerdTTRPC(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "containerd.sock.ttrpc")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := ttrpc.NewServer()
	f := &forwarder{seen: make(chan struct{}, 1)}
	ttrpcevents.RegisterTTRPCEventsService(srv, f)
	go srv.Serve(context.Background(), l)
	defer srv.Close()

	pub, err := taskevents.NewRemotePublisher(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	q := taskevents.NewQueue(pub)
	defer q.Close(context.Background())
	q.Publish("k8s.io", "/tasks/exit", &eventstypes.TaskExit{ContainerID: "c1", ID: "c1", ExitStatus: 137})
	select {
	case <-f.seen:
	case <-time.After(5 * time.Second):
		t.Fatal("containerd never got the exit")
	}
	f.mu.Lock()
	env := f.got[0].Envelope
	f.mu.Unlock()
	if env.Namespace != "k8s.io" || env.Topic != "/tasks/exit" {
		t.Errorf("envelope %v", env)
	}
	v, err := typeurl.UnmarshalAny(env.Event)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := v.(*eventstypes.TaskExit); !ok || e.ContainerID != "c1" || e.ExitStatus != 137 {
		t.Errorf("event %#v", v)
	}
}
