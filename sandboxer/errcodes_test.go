package sandboxer

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestSandboxAPIErrorCodes checks the gRPC code containerd gets from the
// Sandbox API, and from a sandbox's Task API socket, for each kind of
// failure. Backend errors that wrap a cause carrying a kind of its own
// (a deadline under "unavailable", as the VM backend's agent wait
// returns) must reach containerd with the kind the backend put first.
func TestSandboxAPIErrorCodes(t *testing.T) {
	h := newHarness(t, "")
	ctx := context.Background()
	ready := h.createStart(ctx, "ready", nil)
	if _, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: "exists", Options: podOptions(t, nil)}); err != nil {
		t.Fatal(err)
	}
	vmPod := func(id string, failStart error) func() error {
		return func() error {
			if _, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: id, Options: podOptions(t, map[string]string{AnnotationIsolation: "vm"})}); err != nil {
				return err
			}
			h.vm.mu.Lock()
			h.vm.failStart = failStart
			h.vm.mu.Unlock()
			defer func() {
				h.vm.mu.Lock()
				h.vm.failStart = nil
				h.vm.mu.Unlock()
			}()
			_, err := h.client.Start(ctx, &api.ControllerStartRequest{SandboxID: id})
			return err
		}
	}
	agentTimeout := fmt.Errorf("guest agent of sandbox vm-slow is %w: it did not answer within %v (%w)", errdefs.ErrUnavailable, 30*time.Second, context.DeadlineExceeded)
	tests := []struct {
		name string
		call func() error
		code codes.Code
		says []string
	}{
		{"status of an unknown sandbox", func() error {
			_, err := h.client.Status(ctx, &api.ControllerStatusRequest{SandboxID: "nope"})
			return err
		}, codes.NotFound, []string{"nope"}},
		{"create an existing sandbox", func() error {
			_, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: "exists", Options: podOptions(t, nil)})
			return err
		}, codes.AlreadyExists, []string{"exists"}},
		{"create with a path for an ID", func() error {
			_, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: "../escape"})
			return err
		}, codes.InvalidArgument, []string{"../escape"}},
		{"create with options that do not decode", func() error {
			opts := &anypb.Any{TypeUrl: "type.googleapis.com/runtime.v1.PodSandboxConfig", Value: []byte{0xff, 0xff, 0xff}}
			_, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: "badopts", Options: opts})
			return err
		}, codes.InvalidArgument, []string{"decode sandbox options", "proto"}},
		{"create naming an unknown backend", func() error {
			_, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: "quark", Options: podOptions(t, map[string]string{AnnotationIsolation: "quark"})})
			return err
		}, codes.InvalidArgument, []string{"quark"}},
		{"backend start: agent did not answer (unavailable over a deadline)", vmPod("vm-slow", agentTimeout), codes.Unavailable, []string{"did not answer", "deadline exceeded"}},
		{"backend start: its own deadline", vmPod("vm-deadline", fmt.Errorf("boot: %w", context.DeadlineExceeded)), codes.DeadlineExceeded, []string{"vm-deadline"}},
		{"backend start: not configured", vmPod("vm-unset", fmt.Errorf("kernel is not configured: %w", errdefs.ErrFailedPrecondition)), codes.FailedPrecondition, []string{"kernel"}},
		{"task API before the first container", func() error {
			_, err := dialTasks(t, ready.Address).State(ctx, &taskAPI.StateRequest{ID: "c1"})
			return err
		}, codes.NotFound, []string{"no container"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, _ := status.FromError(tc.call())
			if st.Code() != tc.code {
				t.Fatalf("code = %s (%s), want %s", st.Code(), st.Message(), tc.code)
			}
			for _, s := range tc.says {
				if !strings.Contains(st.Message(), s) {
					t.Errorf("message %q does not name %q", st.Message(), s)
				}
			}
		})
	}
}
