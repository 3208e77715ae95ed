package wasmtask_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/task/wasmtask"
)

// TestRecordWrites: the state file names a task's rootfs mount from its
// Create on, is written once by Create (each write changes the file's
// bytes: a slot with the next sequence number), not at all by Start, exit
// or Wait, once by Delete, and not again by Close when nothing changed; a
// restored service writes again even when its records end as they began.
func TestRecordWrites(t *testing.T) {
	state := filepath.Join(t.TempDir(), "wasm-tasks.json")
	h := newHarness(t, wasmtask.WithStateFile(state))
	content := func() string {
		t.Helper()
		b, err := os.ReadFile(state)
		if os.IsNotExist(err) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if content() != "" {
		t.Fatal("a service without tasks wrote records")
	}
	b := h.bundle(t, "t", []string{"/hello.wasm"}, map[string][]byte{"hello.wasm": fixtures.Hello})
	r(h.client.Create(h.ctx, b.req)).get(t)
	created := content()
	recs, err := wasmtask.LoadRecords(state)
	if err != nil || len(recs) != 1 || recs[0].ID != "t" || recs[0].Rootfs != filepath.Join(b.dir, "rootfs") {
		t.Fatalf("records after create: %+v, %v", recs, err)
	}
	r(h.client.Start(h.ctx, &taskAPI.StartRequest{ID: "t"})).get(t)
	r(h.client.Wait(h.ctx, &taskAPI.WaitRequest{ID: "t"})).get(t)
	if content() != created {
		t.Error("start or exit rewrote the records")
	}
	r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "t"})).get(t)
	deleted := content()
	if deleted == created {
		t.Fatal("delete did not rewrite the records")
	}
	if recs, err := wasmtask.LoadRecords(state); err != nil || len(recs) != 0 {
		t.Fatalf("records after delete: %+v, %v", recs, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.svc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if content() != deleted {
		t.Error("close rewrote unchanged records")
	}

	// A restarted service restores the file's records and, once they are
	// gone again, must write that: the file is not what it last wrote.
	first := filepath.Join(t.TempDir(), "first.json")
	h2 := newHarness(t, wasmtask.WithStateFile(first))
	b2 := h2.bundle(t, "u", []string{"/hello.wasm"}, map[string][]byte{"hello.wasm": fixtures.Hello})
	r(h2.client.Create(h2.ctx, b2.req)).get(t)
	r(h2.client.Kill(h2.ctx, &taskAPI.KillRequest{ID: "u", Signal: 9})).get(t)
	r(h2.client.Wait(h2.ctx, &taskAPI.WaitRequest{ID: "u"})).get(t)
	raw, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	// The second process's state file holds what the first one left.
	restarted := filepath.Join(t.TempDir(), "restarted.json")
	if err := os.WriteFile(restarted, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	recs, err = wasmtask.LoadRecords(restarted)
	if err != nil || len(recs) != 1 {
		t.Fatalf("records left: %+v, %v", recs, err)
	}
	r(h2.client.Delete(h2.ctx, &taskAPI.DeleteRequest{ID: "u"})).get(t) // the mount goes with the first service
	h3 := newHarness(t, wasmtask.WithStateFile(restarted))
	h3.svc.Restore(recs, 137, time.Now())
	r(h3.client.Delete(h3.ctx, &taskAPI.DeleteRequest{ID: "u"})).get(t)
	if recs, err := wasmtask.LoadRecords(restarted); err != nil || len(recs) != 0 {
		t.Fatalf("records after the restored task's delete: %+v, %v", recs, err)
	}
}
