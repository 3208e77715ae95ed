package taskpb_test

import (
	"reflect"
	"strings"
	"testing"

	containerdtask "github.com/containerd/containerd/api/runtime/task/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kuasar-go/kuasar/task/agent/internal/taskpb"
)

// TestWireCompatible compares every message of containerd's Task API v3
// with this package's copy: same names (but for the package), same field
// numbers, kinds, cardinalities and message types, so that either side
// decodes what the other encodes. It also checks that every method of
// containerd's service has a ttrpc stub here, and that both packages are
// linked into this test without a registration conflict.
func TestWireCompatible(t *testing.T) {
	theirs := containerdtask.File_runtime_task_v3_shim_proto
	ours := taskpb.File_kuasar_agent_task_proto
	if theirs.Messages().Len() != ours.Messages().Len() {
		t.Errorf("containerd has %d messages, taskpb %d", theirs.Messages().Len(), ours.Messages().Len())
	}
	for i := 0; i < theirs.Messages().Len(); i++ {
		tm := theirs.Messages().Get(i)
		om := ours.Messages().ByName(tm.Name())
		if om == nil {
			t.Errorf("message %s missing", tm.Name())
			continue
		}
		if tm.Fields().Len() != om.Fields().Len() {
			t.Errorf("%s: %d fields, taskpb %d", tm.Name(), tm.Fields().Len(), om.Fields().Len())
		}
		for j := 0; j < tm.Fields().Len(); j++ {
			tf := tm.Fields().Get(j)
			of := om.Fields().ByNumber(tf.Number())
			if of == nil {
				t.Errorf("%s.%s (%d) missing", tm.Name(), tf.Name(), tf.Number())
				continue
			}
			if of.Name() != tf.Name() || of.Kind() != tf.Kind() || of.Cardinality() != tf.Cardinality() || of.IsMap() != tf.IsMap() {
				t.Errorf("%s field %d: %s %v %v, taskpb %s %v %v", tm.Name(), tf.Number(), tf.Name(), tf.Kind(), tf.Cardinality(), of.Name(), of.Kind(), of.Cardinality())
			}
			if tf.Kind() == protoreflect.MessageKind && !sameMessage(tf.Message(), of.Message()) {
				t.Errorf("%s.%s: message %s, taskpb %s", tm.Name(), tf.Name(), tf.Message().FullName(), of.Message().FullName())
			}
		}
	}
	svc := theirs.Services().ByName("Task")
	if svc == nil {
		t.Fatal("containerd's file has no Task service")
	}
	stubs := reflect.TypeOf((*taskpb.TTRPCTaskService)(nil)).Elem()
	if stubs.NumMethod() != svc.Methods().Len() {
		t.Errorf("containerd's Task service has %d methods, the ttrpc stubs %d: regenerate (go generate)", svc.Methods().Len(), stubs.NumMethod())
	}
	for i := 0; i < svc.Methods().Len(); i++ {
		m := svc.Methods().Get(i)
		if _, ok := stubs.MethodByName(string(m.Name())); !ok {
			t.Errorf("method %s has no ttrpc stub", m.Name())
		}
		if ours.Messages().ByName(m.Input().Name()) == nil {
			t.Errorf("method %s: input %s has no copy", m.Name(), m.Input().Name())
		}
	}
}

// sameMessage: the copy of a Task API message, or the very same shared type.
func sameMessage(theirs, ours protoreflect.MessageDescriptor) bool {
	if theirs.FullName() == ours.FullName() {
		return true
	}
	return strings.HasPrefix(string(theirs.FullName()), "containerd.task.v3.") &&
		strings.HasPrefix(string(ours.FullName()), "kuasar.agent.task.v3.") && theirs.Name() == ours.Name()
}

// TestRoundTrip encodes containerd's messages and decodes them as
// taskpb's, and back.
func TestRoundTrip(t *testing.T) {
	in := &containerdtask.CreateTaskRequest{ID: "c1", Bundle: "/b", Stdin: "in", Stdout: "out", Terminal: true, Checkpoint: "cp"}
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var mid taskpb.CreateTaskRequest
	if err := proto.Unmarshal(b, &mid); err != nil {
		t.Fatal(err)
	}
	if mid.ID != "c1" || mid.Bundle != "/b" || mid.Stdin != "in" || mid.Stdout != "out" || !mid.Terminal || mid.Checkpoint != "cp" {
		t.Fatalf("decoded %+v", &mid)
	}
	b, err = proto.Marshal(&taskpb.WaitResponse{ExitStatus: 137})
	if err != nil {
		t.Fatal(err)
	}
	var out containerdtask.WaitResponse
	if err := proto.Unmarshal(b, &out); err != nil || out.ExitStatus != 137 {
		t.Fatalf("WaitResponse back: %+v %v", &out, err)
	}
}
