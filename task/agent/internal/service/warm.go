package service

import (
	"encoding/json"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	taskapi "github.com/kuasar-go/kuasar/task/agent/internal/taskpb"
)

// WarmUp does ahead of time the one-time work that otherwise lands on the
// first container's Create: encoding/json's per-type caches for the
// runtime-spec document and the set-up helper's config, and protobuf's lazy
// set-up of the Task API messages that Create and Start carry. Measured in
// the guest under QEMU TCG that is about 10 ms. The guest agent runs it at
// boot, concurrently with waiting for the host; it is safe to call at any
// time and more than once.
func WarmUp() {
	// Marshal builds the encoders, and with them the field caches that
	// Unmarshal shares, for every type reachable from the value's type.
	var spec specs.Spec
	if b, err := json.Marshal(&spec); err == nil {
		_ = json.Unmarshal(b, &spec)
	}
	cfg := helperConfig{Mounts: []specs.Mount{{}}, Rlimits: []specs.POSIXRlimit{{}}}
	if b, err := json.Marshal(&cfg); err == nil {
		_ = json.Unmarshal(b, &cfg)
	}
	for _, m := range []proto.Message{
		&taskapi.CreateTaskRequest{}, &taskapi.CreateTaskResponse{},
		&taskapi.StartRequest{}, &taskapi.StartResponse{},
		&taskapi.WaitRequest{}, &taskapi.WaitResponse{},
		&taskapi.StateRequest{}, &taskapi.StateResponse{},
		&taskapi.DeleteRequest{}, &taskapi.DeleteResponse{},
		&taskapi.KillRequest{}, &taskapi.ExecProcessRequest{},
	} {
		if b, err := proto.Marshal(m); err == nil {
			_ = proto.Unmarshal(b, m)
		}
	}
}
