package sandboxer

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kuasar-go/kuasar/internal/crashpoint"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
)

// maxGone bounds how many shut-down IDs are remembered so that a repeated
// Shutdown succeeds instead of returning NotFound.
const maxGone = 4096

// specTypeURL is the type URL containerd expects on the spec Start returns.
const specTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"

// Create records a new sandbox. Nothing runs until Start.
func (s *Service) Create(ctx context.Context, req *api.ControllerCreateRequest) (_ *api.ControllerCreateResponse, retErr error) {
	id := req.GetSandboxID()
	if err := validID(id); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("sandbox", id))
	r := &record{
		ID:        id,
		State:     stateCreated,
		NetnsPath: req.GetNetnsPath(),
		Annot:     map[string]string{},
		Labels:    map[string]string{},
		CreatedAt: timeNow().UTC(),
	}
	r.Namespace, _ = namespaces.Namespace(ctx)
	if sbx := req.GetSandbox(); sbx != nil {
		for k, v := range sbx.GetLabels() {
			r.Labels[k] = v
		}
		r.Handler = handlerFromExtensions(sbx.GetExtensions())
	}
	if opts := req.GetOptions(); opts != nil {
		cfg, err := decodePodConfig(opts)
		if err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		if cfg != nil {
			r.Hostname = cfg.GetHostname()
			for k, v := range cfg.GetAnnotations() {
				r.Annot[k] = v
			}
			for k, v := range cfg.GetLabels() {
				r.Labels[k] = v
			}
			if lr := cfg.GetLinux().GetResources(); lr != nil {
				r.Resources = backend.Resources{
					MemoryLimitBytes: uint64(max(lr.GetMemoryLimitInBytes(), 0)),
					CPUQuota:         lr.GetCpuQuota(),
					CPUPeriod:        uint64(max(lr.GetCpuPeriod(), 0)),
				}
			}
		}
	}
	for k, v := range req.GetAnnotations() {
		r.Annot[k] = v
	}
	if h := r.Annot[annotationRuntimeHandler]; h != "" && r.Handler == "" {
		r.Handler = h
	}
	if iso := r.Annot[AnnotationIsolation]; iso != "" {
		if _, ok := s.backends[iso]; !ok {
			return nil, errgrpc.ToGRPC(fmt.Errorf("pod annotation %s=%q names no backend of this sandboxer (have %v): fix the pod's annotation: %w",
				AnnotationIsolation, iso, s.backendNames(), errdefs.ErrInvalidArgument))
		}
	}

	s.mu.Lock()
	if _, ok := s.sandboxes[id]; ok {
		s.mu.Unlock()
		return nil, errgrpc.ToGRPC(fmt.Errorf("sandbox %q: %w", id, errdefs.ErrAlreadyExists))
	}
	sb := newSandbox(s, r)
	s.sandboxes[id] = sb
	delete(s.gone, id)
	s.mu.Unlock()
	defer func() {
		if retErr != nil {
			s.mu.Lock()
			delete(s.sandboxes, id)
			s.mu.Unlock()
			s.store.remove(context.WithoutCancel(ctx), id)
		}
	}()
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if err := s.store.create(&sb.rec, nil); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("persist sandbox %s: %w", id, err))
	}
	crashpoint.Hit("sandbox.create.saved")
	log.G(ctx).WithField("handler", r.Handler).Debug("sandbox created")
	return &api.ControllerCreateResponse{SandboxID: id}, nil
}

// decodePodConfig returns the CRI PodSandboxConfig in opts, nil when opts
// holds something else.
func decodePodConfig(opts *anypb.Any) (*runtimeapi.PodSandboxConfig, error) {
	if !strings.HasSuffix(opts.GetTypeUrl(), "runtime.v1.PodSandboxConfig") {
		return nil, nil
	}
	v, err := typeurl.UnmarshalAny(opts)
	if err != nil {
		return nil, fmt.Errorf("decode sandbox options (%s): %w: %w", opts.GetTypeUrl(), err, errdefs.ErrInvalidArgument)
	}
	cfg, ok := v.(*runtimeapi.PodSandboxConfig)
	if !ok {
		return nil, fmt.Errorf("sandbox options decode to %T, not a PodSandboxConfig: %w", v, errdefs.ErrInvalidArgument)
	}
	return cfg, nil
}

// handlerFromExtensions reads the CRI runtime handler from the sandbox
// record's "metadata" extension (CRI's JSON sandbox metadata).
func handlerFromExtensions(ext map[string]*anypb.Any) string {
	a := ext["metadata"]
	if a == nil {
		return ""
	}
	var md struct {
		Metadata struct {
			RuntimeHandler string
		}
	}
	if json.Unmarshal(a.GetValue(), &md) != nil {
		return ""
	}
	return md.Metadata.RuntimeHandler
}

// Start serves the sandbox's Task API socket and, when the pod names its
// kind, starts the backend. Otherwise the backend starts with the first
// container (see route.go). Start is idempotent while the sandbox runs.
func (s *Service) Start(ctx context.Context, req *api.ControllerStartRequest) (*api.ControllerStartResponse, error) {
	sb, err := s.get(ctx, req.GetSandboxID())
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	ctx = log.WithLogger(ctx, sb.logger(ctx))
	sb.mu.Lock()
	if sb.rec.Exited {
		sb.mu.Unlock()
		return nil, errgrpc.ToGRPC(fmt.Errorf("sandbox %s has already exited: remove it and create a new one: %w", sb.rec.ID, errdefs.ErrFailedPrecondition))
	}
	needStart := sb.rec.State != stateReady
	iso, hv := sb.rec.Annot[AnnotationIsolation], sb.rec.Annot[annotationHypervisor]
	if hv == "" {
		_, hv = s.cfg.HandlerIsolation(sb.rec.Handler)
	}
	if needStart {
		if err := sb.serveTasksLocked(ctx); err != nil {
			sb.mu.Unlock()
			return nil, errgrpc.ToGRPC(err)
		}
	}
	sb.mu.Unlock()
	if needStart {
		crashpoint.Hit("sandbox.start.served")
	}
	if needStart && iso != "" {
		if err := sb.startBackend(ctx, iso, hv); err != nil {
			sb.mu.Lock()
			if sb.rec.State != stateReady {
				sb.closeTaskServer()
				removeSocket(sb.socketPath())
			}
			sb.mu.Unlock()
			return nil, errgrpc.ToGRPC(err)
		}
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.rec.Exited {
		return nil, errgrpc.ToGRPC(fmt.Errorf("sandbox %s exited while starting: %w", sb.rec.ID, errdefs.ErrFailedPrecondition))
	}
	if sb.rec.State != stateReady {
		sb.rec.State = stateReady
		sb.rec.StartedAt = timeNow().UTC()
		if err := sb.saveLocked(); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		crashpoint.Hit("sandbox.start.saved")
		log.G(ctx).WithField("backend", sb.rec.Backend).Info("sandbox started")
	}
	spec, err := sb.specAnyLocked()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &api.ControllerStartResponse{
		SandboxID: sb.rec.ID,
		Pid:       sb.pidLocked(),
		CreatedAt: timestamppb.New(sb.rec.CreatedAt),
		Labels:    sb.rec.Labels,
		Address:   sb.address(),
		Version:   taskAPIVersion,
		Spec:      spec,
	}, nil
}

func (sb *sandbox) pidLocked() uint32 {
	if sb.inst != nil {
		return sb.inst.Pid()
	}
	return uint32(os.Getpid())
}

// specAnyLocked describes the sandbox as an OCI spec (JSON), which
// containerd's CRI and NRI read.
func (sb *sandbox) specAnyLocked() (*anypb.Any, error) {
	sp := specs.Spec{
		Version:     specs.Version,
		Hostname:    sb.rec.Hostname,
		Annotations: sb.rec.Annot,
		Linux:       &specs.Linux{},
	}
	if sb.rec.NetnsPath != "" {
		sp.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: sb.rec.NetnsPath}}
	}
	if r := sb.rec.Resources; r.MemoryLimitBytes != 0 || r.CPUQuota != 0 {
		res := &specs.LinuxResources{}
		if r.MemoryLimitBytes != 0 {
			l := int64(r.MemoryLimitBytes)
			res.Memory = &specs.LinuxMemory{Limit: &l}
		}
		if r.CPUQuota != 0 {
			q, p := r.CPUQuota, r.CPUPeriod
			res.CPU = &specs.LinuxCPU{Quota: &q, Period: &p}
		}
		sp.Linux.Resources = res
	}
	b, err := json.Marshal(&sp)
	if err != nil {
		return nil, err
	}
	return &anypb.Any{TypeUrl: specTypeURL, Value: b}, nil
}

// Platform reports linux on the host architecture: CRI generates Linux
// container specs for every kuasar sandbox, Wasm ones included.
func (s *Service) Platform(ctx context.Context, req *api.ControllerPlatformRequest) (*api.ControllerPlatformResponse, error) {
	if _, err := s.get(ctx, req.GetSandboxID()); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	osName, arch := s.platform()
	return &api.ControllerPlatformResponse{Platform: &types.Platform{OS: osName, Architecture: arch}}, nil
}

// Stop stops the sandbox within timeout_secs (0: at once). Stopping an
// exited sandbox succeeds.
func (s *Service) Stop(ctx context.Context, req *api.ControllerStopRequest) (*api.ControllerStopResponse, error) {
	sb, err := s.get(ctx, req.GetSandboxID())
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	ctx = log.WithLogger(ctx, sb.logger(ctx))
	timeout := time.Duration(req.GetTimeoutSecs()) * time.Second
	crashpoint.Hit("sandbox.stop")
	if err := sb.stop(ctx, timeout); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	crashpoint.Hit("sandbox.stop.done")
	log.G(ctx).Info("sandbox stopped")
	return &api.ControllerStopResponse{}, nil
}

// Wait blocks until the sandbox exits (or the call is cancelled).
func (s *Service) Wait(ctx context.Context, req *api.ControllerWaitRequest) (*api.ControllerWaitResponse, error) {
	sb, err := s.get(ctx, req.GetSandboxID())
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	select {
	case <-sb.done:
	case <-ctx.Done():
		return nil, errgrpc.ToGRPC(errDeadline(ctx, "wait for sandbox "+sb.rec.ID))
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return &api.ControllerWaitResponse{ExitStatus: sb.rec.ExitStatus, ExitedAt: timestamppb.New(sb.rec.ExitedAt)}, nil
}

// Status reports the sandbox's state and Task API address; verbose adds an
// info map (backend, tasks, socket, state dir).
func (s *Service) Status(ctx context.Context, req *api.ControllerStatusRequest) (*api.ControllerStatusResponse, error) {
	sb, err := s.get(ctx, req.GetSandboxID())
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	sb.mu.Lock()
	resp := &api.ControllerStatusResponse{
		SandboxID: sb.rec.ID,
		Pid:       sb.pidLocked(),
		State:     sb.rec.State,
		CreatedAt: timestamppb.New(sb.rec.CreatedAt),
		Address:   sb.address(),
		Version:   taskAPIVersion,
	}
	if sb.rec.Exited {
		resp.ExitedAt = timestamppb.New(sb.rec.ExitedAt)
	}
	inst := sb.inst
	info := map[string]string{}
	if req.GetVerbose() {
		info["backend"] = sb.rec.Backend
		info["handler"] = sb.rec.Handler
		info["hypervisor"] = sb.rec.Hypervisor
		info["socket"] = sb.socketPath()
		info["state_dir"] = sb.dir()
		info["namespace"] = sb.rec.Namespace
		if sb.rec.Exited {
			info["exit_status"] = strconv.FormatUint(uint64(sb.rec.ExitStatus), 10)
		}
	}
	sb.mu.Unlock()
	if req.GetVerbose() {
		info["tasks"] = "0"
		if inst != nil {
			if m, err := inst.Metrics(ctx); err == nil {
				info["tasks"] = strconv.FormatUint(uint64(m.Tasks), 10)
				info["memory_bytes"] = strconv.FormatUint(m.MemoryBytes, 10)
			}
		}
		resp.Info = info
	}
	return resp, nil
}

// Shutdown stops the sandbox if needed and removes everything it owned: the
// backend's resources, the task socket, the record and the directory. A
// sandbox already shut down by this process succeeds again; an ID never
// known is NotFound.
func (s *Service) Shutdown(ctx context.Context, req *api.ControllerShutdownRequest) (*api.ControllerShutdownResponse, error) {
	id := req.GetSandboxID()
	sb, err := s.get(ctx, id)
	if err != nil {
		s.mu.Lock()
		_, gone := s.gone[id]
		s.mu.Unlock()
		if gone {
			return &api.ControllerShutdownResponse{}, nil
		}
		return nil, errgrpc.ToGRPC(err)
	}
	ctx = log.WithLogger(ctx, sb.logger(ctx))
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.inst != nil {
		if err := sb.inst.Shutdown(ctx); err != nil {
			return nil, errgrpc.ToGRPC(fmt.Errorf("shut down sandbox %s: %w", id, err))
		}
	}
	sb.markExitedLocked(backend.Exit{Status: 0})
	sb.inst = nil
	sb.removed = true
	sb.closeTaskServer()
	crashpoint.Hit("sandbox.shutdown.backend")
	if err := s.store.remove(ctx, id); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("remove state of sandbox %s: %w", id, err))
	}
	s.mu.Lock()
	delete(s.sandboxes, id)
	if len(s.gone) >= maxGone {
		clear(s.gone) // bounded memory; an old repeated Shutdown then gets NotFound
	}
	s.gone[id] = struct{}{}
	s.mu.Unlock()
	log.G(ctx).Info("sandbox shut down")
	return &api.ControllerShutdownResponse{}, nil
}

// Update applies new labels and, from an updated spec, new resources.
func (s *Service) Update(ctx context.Context, req *api.ControllerUpdateRequest) (*api.ControllerUpdateResponse, error) {
	sb, err := s.get(ctx, req.GetSandboxID())
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	sbx := req.GetSandbox()
	if sbx == nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("update of sandbox %s carries no sandbox: %w", sb.rec.ID, errdefs.ErrInvalidArgument))
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	fields := req.GetFields()
	all := len(fields) == 0
	has := func(f string) bool {
		for _, x := range fields {
			if x == f || strings.HasPrefix(x, f+".") {
				return true
			}
		}
		return all
	}
	if has("labels") && sbx.GetLabels() != nil {
		sb.rec.Labels = sbx.GetLabels()
	}
	if has("spec") && sbx.GetSpec() != nil {
		var sp specs.Spec
		if err := json.Unmarshal(sbx.GetSpec().GetValue(), &sp); err == nil && sp.Linux != nil && sp.Linux.Resources != nil {
			r := sb.rec.Resources
			if m := sp.Linux.Resources.Memory; m != nil && m.Limit != nil && *m.Limit > 0 {
				r.MemoryLimitBytes = uint64(*m.Limit)
			}
			if c := sp.Linux.Resources.CPU; c != nil {
				if c.Quota != nil {
					r.CPUQuota = *c.Quota
				}
				if c.Period != nil {
					r.CPUPeriod = *c.Period
				}
			}
			if sb.inst != nil && r != sb.rec.Resources {
				if err := sb.inst.Update(ctx, r); err != nil {
					return nil, errgrpc.ToGRPC(fmt.Errorf("update resources of sandbox %s: %w", sb.rec.ID, err))
				}
			}
			sb.rec.Resources = r
		}
	}
	if err := sb.saveLocked(); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &api.ControllerUpdateResponse{}, nil
}
