package linuxtask

import (
	"fmt"
	"testing"

	taskapi "github.com/containerd/containerd/api/runtime/task/v3"
)

// BenchmarkRunContainer measures Create+Start+Wait+Delete of a busybox
// `true` container over ttrpc (namespaces, mounts, pivot_root, exec).
func BenchmarkRunContainer(b *testing.B) {
	e := newEnv(b)
	bundle := makeBundle(b, []string{"true"})
	ctx := ctxT(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("bench-%d", i)
		if _, err := e.tasks.Create(ctx, &taskapi.CreateTaskRequest{ID: id, Bundle: bundle}); err != nil {
			b.Fatal(err)
		}
		if _, err := e.tasks.Start(ctx, &taskapi.StartRequest{ID: id}); err != nil {
			b.Fatal(err)
		}
		if _, err := e.tasks.Wait(ctx, &taskapi.WaitRequest{ID: id}); err != nil {
			b.Fatal(err)
		}
		if _, err := e.tasks.Delete(ctx, &taskapi.DeleteRequest{ID: id}); err != nil {
			b.Fatal(err)
		}
	}
}
