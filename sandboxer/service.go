// Package sandboxer implements kuasar-go's containerd sandboxer: the Sandbox
// API (containerd.services.sandbox.v1.Controller) that containerd reaches
// through a [proxy_plugins] entry of type "sandbox", one Task API socket per
// sandbox, persisted sandbox records and the routing of each sandbox to a
// backend.Backend ("wasm", "vm", ...).
//
// containerd talks to the sandboxer in two ways: over gRPC for the sandbox
// lifecycle (Create, Start, Stop, Wait, Status, Shutdown, Metrics, Update,
// Platform), and over ttrpc, at the address Start returns, for the tasks of
// that sandbox's containers. The sandboxer owns both sockets and forwards
// every Task API call to the Instance its backend returned.
package sandboxer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"google.golang.org/grpc"

	"github.com/kuasar-go/kuasar/internal/procmark"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/sandboxer/config"
)

// Annotation and label keys the sandboxer reads.
const (
	// AnnotationIsolation on a pod asks for a sandbox kind ("wasm", "vm").
	AnnotationIsolation = "kuasar.io/isolation"
	// annotationHypervisor on a pod names the hypervisor of a "vm" sandbox.
	annotationHypervisor = "kuasar.io/hypervisor"
	// annotationWasmEngine on a pod names the Wasm engine of a "wasm"
	// sandbox (the wasm backend's AnnotationEngine).
	annotationWasmEngine = "kuasar.io/wasm-engine"
	// annotationRuntimeHandler is where CRI writes the pod's runtime handler.
	annotationRuntimeHandler = "io.kubernetes.cri.runtime-handler"
	// annotationImageName is where CRI writes a container's image name.
	annotationImageName = "io.kubernetes.cri.image-name"
	// taskAPIVersion is the Task API version Start and Status report; containerd
	// dials the returned address directly only for version 3.
	taskAPIVersion = 3
)

// Service is the Sandbox API controller and the owner of every sandbox's
// Task API socket. Create one with New, register it on a gRPC server with
// Register, and call Recover once at start-up.
type Service struct {
	api.UnimplementedControllerServer

	// acceptor accepts on every sandbox's Task API socket.
	acceptor acceptor

	cfg      *config.Config
	backends map[string]backend.Backend
	resolver ImageResolver
	// containerd answers which sandboxes containerd still knows (nil:
	// not asked).
	containerd SandboxStore
	store      store
	sockMode   os.FileMode

	mu        sync.Mutex
	sandboxes map[string]*sandbox
	gone      map[string]struct{}
}

// Option configures a Service.
type Option func(*Service)

// WithConfig sets the configuration (default: the embedded defaults).
func WithConfig(c *config.Config) Option { return func(s *Service) { s.cfg = c } }

// WithStateDir overrides the configuration's state directory.
func WithStateDir(dir string) Option { return func(s *Service) { s.store.root = dir } }

// WithBackend makes b available under b.Name(); the last one of a name wins.
func WithBackend(b backend.Backend) Option {
	return func(s *Service) { s.backends[b.Name()] = b }
}

// WithImageResolver sets how the sandboxer reads image metadata to route a
// sandbox whose kind is only known at its first container.
func WithImageResolver(r ImageResolver) Option { return func(s *Service) { s.resolver = r } }

// New returns a Service. It creates the state directory but serves nothing.
func New(ctx context.Context, opts ...Option) (*Service, error) {
	s := &Service{
		backends:  map[string]backend.Backend{},
		sandboxes: map[string]*sandbox{},
		gone:      map[string]struct{}{},
	}
	for _, o := range opts {
		o(s)
	}
	if s.cfg == nil {
		c, err := config.Default()
		if err != nil {
			return nil, err
		}
		s.cfg = c
	}
	if s.store.root == "" {
		s.store.root = s.cfg.Sandboxer.StateDir
	}
	root, err := filepath.Abs(s.store.root)
	if err != nil {
		return nil, err
	}
	s.store.root = root
	if s.sockMode, err = s.cfg.SocketFileMode(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(root, "sandboxes"), 0o700); err != nil {
		return nil, fmt.Errorf("create state dir %s: %w", root, err)
	}
	s.store.base, _ = socketsBase(root)
	if err := prepareBase(root, s.store.base); err != nil {
		return nil, err
	}
	s.store.volatile = onTmpfs(root)
	if err := s.acceptor.open(); err != nil {
		return nil, err
	}
	return s, nil
}

// serverWindow is the Sandbox API's fixed HTTP/2 flow-control window, per
// stream and per connection (see ServerOptions).
const serverWindow = 1 << 20

// ServerOptions are the gRPC server options the Sandbox API is served with
// (add the interceptors). They fix the flow-control windows, which turns
// off gRPC's bandwidth-delay estimation on the server side: with it, the
// server answered every request carrying data with a PING of its own and
// then had to read and handle the client's PING ACK, a window update and
// one more wake-up of the connection's reader goroutine per call (7 of the
// ~41 reads a Wasm sandbox's life costs the sandboxer), for messages of a
// few hundred bytes on a local socket, where that estimate serves nothing.
// 1 MiB per stream and per connection lets every sandbox's calls through
// without waiting for a window update: containerd sends them all on one
// connection.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.InitialWindowSize(serverWindow), grpc.InitialConnWindowSize(serverWindow)}
}

// Register serves the Controller on g.
func (s *Service) Register(g *grpc.Server) { api.RegisterControllerServer(g, s) }

// StateDir is the absolute state directory.
func (s *Service) StateDir() string { return s.store.root }

// SocketsDir is the directory holding the sandboxes' task sockets and the
// backends' directories: the state directory, or a short directory of its
// own when the state directory is too long for unix socket paths.
func (s *Service) SocketsDir() string { return s.store.base }

// Len is the number of sandboxes the service knows (for tests and debugging).
func (s *Service) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sandboxes)
}

// Recover loads every persisted record and re-attaches each sandbox to its
// backend in parallel; it returns when every sandbox is re-attached. It is
// LoadRecords followed by the wait it returns.
func (s *Service) Recover(ctx context.Context) error {
	wait, err := s.LoadRecords(ctx)
	if err != nil {
		return err
	}
	wait()
	return nil
}

// LoadRecords reads every persisted record, registers its sandbox and
// starts re-attaching them all in the background; it returns once every
// record is registered, with a func that waits for the re-attaching. Call it
// before serving: from then on an RPC on a persisted sandbox finds it (and
// waits for that sandbox's own recovery) instead of being told it does not
// exist, while new sandboxes are served at once.
func (s *Service) LoadRecords(ctx context.Context) (wait func(), err error) {
	// Processes started from here on are this run's (new sandboxes, a
	// backend's clones made ahead of need), never a crash's leftovers.
	since := procmark.Now()
	recs, orphans, err := s.store.load()
	if err != nil {
		return nil, fmt.Errorf("read sandbox records under %s: %w", s.store.root, err)
	}
	for _, dir := range orphans {
		log.G(ctx).WithField("dir", dir).Warn("removing sandbox directory without a record (interrupted create)")
		os.RemoveAll(dir)
	}
	for _, dir := range s.store.orphanBackendDirs(recs) {
		log.G(ctx).WithField("dir", dir).Warn("reaping backend directory without a record (interrupted create or shutdown)")
		if err := reapDir(ctx, dir); err != nil {
			log.G(ctx).WithField("dir", dir).WithError(err).Warn("reap backend directory")
		}
	}
	for _, p := range s.store.orphanSockets(recs) {
		log.G(ctx).WithField("socket", p).Warn("removing task socket without a record")
		removeSocket(p)
	}
	var wg sync.WaitGroup
	ids := make([]string, 0, len(recs))
	s.mu.Lock()
	for _, r := range recs {
		ids = append(ids, r.ID)
		sb := newSandbox(s, r)
		sb.recovering = make(chan struct{})
		s.sandboxes[r.ID] = sb
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(sb.recovering)
			sb.recover(ctx)
		}()
	}
	s.mu.Unlock()
	// Once every record is re-attached (or found exited), no marked
	// process may run without a live sandbox.
	reconciled := make(chan struct{})
	go func() {
		defer close(reconciled)
		wg.Wait()
		s.dropForgotten(ctx, ids)
		s.reconcileProcs(ctx, since)
	}()
	return func() { <-reconciled }, nil
}

// Close stops serving every Task API socket without shutting sandboxes down:
// their records stay for the next start to recover.
func (s *Service) Close() {
	s.mu.Lock()
	sbs := make([]*sandbox, 0, len(s.sandboxes))
	for _, sb := range s.sandboxes {
		sbs = append(sbs, sb)
	}
	s.mu.Unlock()
	for _, sb := range sbs {
		sb.mu.Lock()
		sb.closeTaskServer()
		sb.mu.Unlock()
	}
	s.acceptor.close()
}

// get returns the sandbox called id, waiting for its recovery if needed.
func (s *Service) get(ctx context.Context, id string) (*sandbox, error) {
	if err := validID(id); err != nil {
		return nil, err
	}
	s.mu.Lock()
	sb, ok := s.sandboxes[id]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	if sb.recovering != nil {
		select {
		case <-sb.recovering:
		case <-ctx.Done():
			return nil, fmt.Errorf("sandbox %q is still being recovered: %w", id, errdefs.ErrUnavailable)
		}
	}
	return sb, nil
}

func (s *Service) platform() (os, arch string) { return "linux", runtime.GOARCH }

func errDeadline(ctx context.Context, what string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, context.DeadlineExceeded)
	}
	return fmt.Errorf("%s: %w", what, context.Canceled)
}

// timeNow is replaceable in tests.
var timeNow = time.Now
