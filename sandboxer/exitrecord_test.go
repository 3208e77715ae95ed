package sandboxer_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/kuasar-go/kuasar/internal/exitrecord"
)

// TestExitRecordedInBundle runs real Wasm tasks and checks that each one's
// exit is in its bundle before containerd deletes it: the record that
// containerd-shim-kuasar-v1 delete reports when containerd loses the
// sandboxer between the exit and the delete (before, it always said 137).
func TestExitRecordedInBundle(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "rec"), 2*time.Minute)
	defer cancel()
	if _, err := r.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: "rec"}); err != nil {
		t.Fatal(err)
	}
	st, err := r.client.Start(ctx, &api.ControllerStartRequest{SandboxID: "rec"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.client.Shutdown(context.WithoutCancel(ctx), &api.ControllerShutdownRequest{SandboxID: "rec"})
	tasks, closeFn, err := taskClient(st.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	for _, tt := range []struct {
		id   string
		args []string
		want uint32
	}{
		{"zero", []string{"/hello.wasm"}, 0},
		{"seven", []string{"/wasi.wasm", "exit", "7"}, 7},
	} {
		req := r.bundle(t, tt.id, tt.args)
		if _, err := tasks.Create(ctx, req); err != nil {
			t.Fatal(err)
		}
		if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: tt.id}); err != nil {
			t.Fatal(err)
		}
		w, err := tasks.Wait(ctx, &taskAPI.WaitRequest{ID: tt.id})
		if err != nil || w.ExitStatus != tt.want {
			t.Fatalf("%s: wait %v %v, want exit %d", tt.id, w, err, tt.want)
		}
		// The record is written by a waiter of its own: poll, with a deadline.
		var rec exitrecord.Record
		for {
			rec, err = exitrecord.Read(req.Bundle)
			if err == nil || ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
		if err != nil {
			t.Fatalf("%s: no exit record in the bundle: %v", tt.id, err)
		}
		if rec.Status != tt.want || !rec.ExitedAt.Equal(w.ExitedAt.AsTime()) {
			t.Fatalf("%s: record %+v, want status %d at %v", tt.id, rec, tt.want, w.ExitedAt.AsTime())
		}
		if _, err := tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: tt.id}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLongStateDirRealWasm runs a real Wasm pod, with a containerd-style
// 64-hex sandbox ID, under a 120-byte state directory (the issue's "a state
// directory of 60+ bytes works"), through the real Sandbox and Task APIs,
// and checks that no socket or backend directory is left afterwards.
func TestLongStateDirRealWasm(t *testing.T) {
	var state string
	r := newRigAt(t, func(dir string) string {
		state = dir + "/" + strings.Repeat("s", 120-len(dir)-1)
		return state
	})
	if len(state) != 120 || r.svc.StateDir() != state {
		t.Fatalf("state dir %s (%d bytes)", r.svc.StateDir(), len(state))
	}
	base := r.svc.SocketsDir()
	if base != state {
		t.Cleanup(func() {
			os.RemoveAll(base)
			os.Remove(filepath.Dir(base)) // only when no other state dir uses it
		})
	}
	id := strings.Repeat("fedcba9876543210", 4)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code, err := r.runOnce(ctx, id, r.bundle(t, "long", []string{"/wasi.wasm", "exit", "3"}))
	if err != nil || code != 3 {
		t.Fatalf("pod under a 120-byte state dir: exit %d, %v", code, err)
	}
	for _, sub := range []string{"s", "b"} {
		if ents, _ := os.ReadDir(filepath.Join(base, sub)); len(ents) != 0 {
			t.Fatalf("%s/%s holds %v after Shutdown", base, sub, ents)
		}
	}
}
