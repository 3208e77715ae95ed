package e2e

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

// criDirectRun is criRun over the CRI gRPC API itself (what kubelet does),
// without crictl's process spawns.
func criDirectRun(b *testing.B, rs cri.RuntimeServiceClient, e *testenv.Env, name, handler, image string, args []string) {
	ctx := context.Background()
	podCfg := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Namespace: "default", Uid: name},
		LogDirectory: filepath.Join(e.Dir, "logs", name),
		Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE}}},
	}
	pod, err := rs.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: podCfg, RuntimeHandler: handler})
	if err != nil {
		b.Fatal(err)
	}
	ctr, err := rs.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, SandboxConfig: podCfg,
		Config: &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: name}, Image: &cri.ImageSpec{Image: image}, Args: args, LogPath: name + ".log"}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := rs.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		st, err := rs.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: ctr.ContainerId})
		if err == nil && st.Status.State == cri.ContainerState_CONTAINER_EXITED {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: container did not exit: %v", handler, err)
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := rs.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId}); err != nil {
		b.Fatal(err)
	}
	if _, err := rs.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCRIDirect is BenchmarkCRI over containerd's CRI gRPC API, as
// kubelet drives it: the runtime's own cost without crictl's.
func BenchmarkCRIDirect(b *testing.B) {
	e := testenv.NewEnv(b)
	e.RequireRuncShim()
	e.ImportPause()
	importWasm(b, e, fixtures.Hello, "hello.wasm", "docker.io/kuasar/hello-bench:test", false)
	e.ImportImage(testenv.BusyboxImage(b, []string{"/bin/echo"}), "docker.io/library/busybox-echo:bench")
	conn, err := grpc.NewClient("unix://"+e.ContainerdSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	rs := cri.NewRuntimeServiceClient(conn)
	cases := []struct {
		name, handler, image string
		args                 []string
	}{
		{"kuasar-wasm-hello", "kuasar", "docker.io/kuasar/hello-bench:test", nil},
		{"runc-busybox-echo", "runc", "docker.io/library/busybox-echo:bench", []string{"hello"}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			criDirectRun(b, rs, e, "warm-"+tc.handler, tc.handler, tc.image, tc.args)
			var durs []time.Duration
			for b.Loop() {
				start := time.Now()
				criDirectRun(b, rs, e, "d-"+tc.handler, tc.handler, tc.image, tc.args)
				durs = append(durs, time.Since(start))
			}
			slices.Sort(durs)
			b.ReportMetric(ms(durs[len(durs)/2]), "p50-ms")
			b.ReportMetric(ms(durs[(len(durs)-1)*9/10]), "p90-ms")
		})
	}
}
