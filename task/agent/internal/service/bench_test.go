package service

import (
	"fmt"
	"testing"

	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	taskapi "github.com/kuasar-go/kuasar/task/agent/internal/taskpb"
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

// BenchmarkStdoutThroughput measures container stdout carried by
// ReadStdout RPCs over ttrpc (unix socket here, virtio-serial in the VM).
func BenchmarkStdoutThroughput(b *testing.B) {
	const size = 16 << 20
	e := newEnv(b)
	bundle := makeBundle(b, []string{"head", "-c", fmt.Sprint(size), "/dev/zero"})
	ctx := ctxT(b)
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("tp-%d", i)
		e.run(id, bundle, false)
		n := 0
		for {
			r, err := e.agent.ReadStdout(ctx, &agentapi.ReadStreamRequest{ContainerId: id, Len: 256 << 10})
			if err != nil {
				break
			}
			n += len(r.Data)
		}
		if n != size {
			b.Fatalf("read %d bytes, want %d", n, size)
		}
		e.wait(id, "")
		e.delete(id)
	}
}
