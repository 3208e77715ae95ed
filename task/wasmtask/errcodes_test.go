package wasmtask_test

import (
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kuasar-go/kuasar/internal/fixtures"
)

// TestTaskAPIErrorCodes checks the status code containerd (and so crictl)
// gets over ttrpc for each kind of failure of the Wasm Task API, and that
// the message still names the cause where one is wrapped next to the kind
// (the JSON error of a bad spec).
func TestTaskAPIErrorCodes(t *testing.T) {
	h := newHarness(t)
	hello := map[string][]byte{"hello.wasm": fixtures.Hello}
	ran := h.bundle(t, "ran", []string{"/hello.wasm"}, hello)
	r(h.client.Create(h.ctx, ran.req)).get(t)
	r(h.client.Start(h.ctx, &taskAPI.StartRequest{ID: "ran"})).get(t)
	r(h.client.Wait(h.ctx, &taskAPI.WaitRequest{ID: "ran"})).get(t)
	created := h.bundle(t, "created", []string{"/hello.wasm"}, hello)
	r(h.client.Create(h.ctx, created.req)).get(t)

	garbage := &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", Value: []byte("{not json")}
	badProc := &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: []byte("{not json")}
	tests := []struct {
		name string
		call func() error
		code codes.Code
		says []string // substrings of the message: the cause is kept
	}{
		{"state of an unknown task", func() error {
			_, err := h.client.State(h.ctx, &taskAPI.StateRequest{ID: "nope"})
			return err
		}, codes.NotFound, []string{"nope"}},
		{"create an existing task", func() error { _, err := h.client.Create(h.ctx, created.req); return err }, codes.AlreadyExists, []string{"created"}},
		{"start a task that exited", func() error {
			_, err := h.client.Start(h.ctx, &taskAPI.StartRequest{ID: "ran"})
			return err
		}, codes.FailedPrecondition, nil},
		{"exec in a task that exited", func() error {
			_, err := h.client.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "ran", ExecID: "e1", Spec: badProc})
			return err
		}, codes.FailedPrecondition, []string{"exited"}},
		{"exec with a process spec that is not JSON", func() error {
			_, err := h.client.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "created", ExecID: "e1", Spec: badProc})
			return err
		}, codes.InvalidArgument, []string{"parse process spec", "invalid character"}},
		{"update with resources that are not JSON", func() error {
			_, err := h.client.Update(h.ctx, &taskAPI.UpdateTaskRequest{ID: "created", Resources: garbage})
			return err
		}, codes.InvalidArgument, []string{"parse resources", "invalid character"}},
		{"pause", func() error { _, err := h.client.Pause(h.ctx, &taskAPI.PauseRequest{ID: "created"}); return err }, codes.Unimplemented, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			st, _ := status.FromError(err)
			if st.Code() != tc.code {
				t.Fatalf("code = %s (%v), want %s", st.Code(), err, tc.code)
			}
			for _, s := range tc.says {
				if !strings.Contains(st.Message(), s) {
					t.Errorf("message %q does not name %q", st.Message(), s)
				}
			}
		})
	}
}
