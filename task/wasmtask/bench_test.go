package wasmtask_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/fifo"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/procfs"
	"github.com/kuasar-go/kuasar/task/wasmtask"
)

// BenchmarkCreateStartExit measures one container of the hello module from
// Create to Delete over the ttrpc socket, as containerd drives it: bundle
// with config.json, rootfs bind-mounted by Create, stdout/stderr FIFOs,
// Start, Wait for the exit, Delete. It reports the median as p50-ms.
func BenchmarkCreateStartExit(b *testing.B) {
	for _, withMount := range []bool{true, false} {
		b.Run(fmt.Sprintf("mount=%v", withMount), func(b *testing.B) {
			h := newHarness(b)
			tmpl := h.bundle(b, "tmpl", []string{"/hello.wasm"}, map[string][]byte{"hello.wasm": fixtures.Hello})
			config, _ := os.ReadFile(filepath.Join(tmpl.dir, "config.json"))
			durs := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				id := "c" + strconv.Itoa(i)
				dir := filepath.Join(h.dir, id)
				os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755)
				os.WriteFile(filepath.Join(dir, "config.json"), config, 0o644)
				req := &taskAPI.CreateTaskRequest{ID: id, Bundle: dir}
				if withMount {
					req.Rootfs = []*types.Mount{{Type: "bind", Source: tmpl.src, Options: []string{"rbind", "ro"}}}
				} else {
					os.WriteFile(filepath.Join(dir, "rootfs", "hello.wasm"), fixtures.Hello, 0o644)
				}
				out := filepath.Join(h.dir, id+"-out")
				rd, err := fifo.OpenFifo(context.Background(), out, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600)
				if err != nil {
					b.Fatal(err)
				}
				req.Stdout, req.Stderr = out, out
				drained := make(chan struct{})
				go func() {
					buf := make([]byte, 4096)
					for {
						if _, err := rd.Read(buf); err != nil {
							break
						}
					}
					close(drained)
				}()
				b.StartTimer()
				start := time.Now()
				if _, err := h.client.Create(h.ctx, req); err != nil {
					b.Fatal(err)
				}
				if _, err := h.client.Start(h.ctx, &taskAPI.StartRequest{ID: id}); err != nil {
					b.Fatal(err)
				}
				w, err := h.client.Wait(h.ctx, &taskAPI.WaitRequest{ID: id})
				if err != nil || w.ExitStatus != 0 {
					b.Fatalf("wait: %v %v", w, err)
				}
				if _, err := h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: id}); err != nil {
					b.Fatal(err)
				}
				durs = append(durs, time.Since(start))
				b.StopTimer()
				<-drained
				rd.Close()
				os.Remove(out)
				os.RemoveAll(dir)
				b.StartTimer()
			}
			b.StopTimer()
			sort.Slice(durs, func(i, j int) bool { return durs[i] < durs[j] })
			b.ReportMetric(float64(durs[len(durs)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(durs[len(durs)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkCreateStartExitParallel is BenchmarkCreateStartExit with
// concurrent clients on one sandbox's socket; it reports tasks/s.
func BenchmarkCreateStartExitParallel(b *testing.B) {
	h := newHarness(b)
	tmpl := h.bundle(b, "tmpl", []string{"/hello.wasm"}, map[string][]byte{"hello.wasm": fixtures.Hello})
	config, _ := os.ReadFile(filepath.Join(tmpl.dir, "config.json"))
	var next atomic.Int64
	b.SetParallelism(4)
	noMount := os.Getenv("NOMOUNT") != ""
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := "p" + strconv.FormatInt(next.Add(1), 10)
			dir := filepath.Join(h.dir, id)
			os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755)
			os.WriteFile(filepath.Join(dir, "config.json"), config, 0o644)
			req := &taskAPI.CreateTaskRequest{ID: id, Bundle: dir,
				Rootfs: []*types.Mount{{Type: "bind", Source: tmpl.src, Options: []string{"rbind", "ro"}}}}
			if noMount {
				req.Rootfs = nil
				os.WriteFile(filepath.Join(dir, "rootfs", "hello.wasm"), fixtures.Hello, 0o644)
			}
			if _, err := h.client.Create(h.ctx, req); err != nil {
				b.Error(err)
				return
			}
			h.client.Start(h.ctx, &taskAPI.StartRequest{ID: id})
			if w, err := h.client.Wait(h.ctx, &taskAPI.WaitRequest{ID: id}); err != nil || w.ExitStatus != 0 {
				b.Errorf("wait: %v %v", w, err)
				return
			}
			if _, err := h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: id}); err != nil {
				b.Error(err)
				return
			}
			os.RemoveAll(dir)
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tasks/s")
}

func rssBytes(b *testing.B) uint64 {
	n, err := procfs.RSSBytes(0)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkIdleInstanceMemory starts b.N containers of the wasi module
// blocked reading their stdin FIFO and reports the growth of the process's
// resident set per instance (rss-bytes/instance) and the linear memory the
// task service reports per instance.
func BenchmarkIdleInstanceMemory(b *testing.B) {
	h := newHarness(b)
	tmpl := h.bundle(b, "tmpl", []string{"/wasi.wasm", "idle"}, map[string][]byte{"wasi.wasm": fixtures.WASI}, withStdin())
	config, _ := os.ReadFile(filepath.Join(tmpl.dir, "config.json"))
	var writers []interface{ Close() error }
	runtime.GC()
	before := rssBytes(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := "idle" + strconv.Itoa(i)
		dir := filepath.Join(h.dir, id)
		os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755)
		os.WriteFile(filepath.Join(dir, "config.json"), config, 0o644)
		in := filepath.Join(h.dir, id+"-in")
		w, err := fifo.OpenFifo(context.Background(), in, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		writers = append(writers, w)
		req := &taskAPI.CreateTaskRequest{ID: id, Bundle: dir, Stdin: in,
			Rootfs: []*types.Mount{{Type: "bind", Source: tmpl.src, Options: []string{"rbind", "ro"}}}}
		if _, err := h.client.Create(h.ctx, req); err != nil {
			b.Fatal(err)
		}
		if _, err := h.client.Start(h.ctx, &taskAPI.StartRequest{ID: id}); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // let every instance reach its read
	b.StopTimer()
	runtime.GC()
	after := rssBytes(b)
	u := h.svc.Usage()
	if int(u.Tasks) != b.N {
		b.Fatalf("%d of %d instances running", u.Tasks, b.N)
	}
	b.ReportMetric(float64(after-before)/float64(b.N), "rss-bytes/instance")
	b.ReportMetric(float64(u.MemoryBytes)/float64(b.N), "linear-bytes/instance")
	h.svc.KillAll(h.ctx, syscall.SIGKILL)
	wasmtask.WaitIdle(h.ctx, h.svc)
	for _, w := range writers {
		w.Close()
	}
}
