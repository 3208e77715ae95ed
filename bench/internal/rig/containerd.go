package rig

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kuasar-go/kuasar/configs"
	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/fixtures"
)

// Image references the CRI scenarios run.
const (
	// PauseImage is containerd v2.4.2's default sandbox image, built here
	// from busybox-static (sleep) so that nothing is pulled.
	PauseImage = "registry.k8s.io/pause:3.10.2"
	// WasmHelloImage runs hello.wasm (a Wasm image, platform wasi/wasm).
	WasmHelloImage = "docker.io/kuasar/hello-bench:bench"
	// BusyboxEchoImage is busybox-static with echo as its entrypoint.
	BusyboxEchoImage = "docker.io/library/busybox-echo:bench"
)

// Containerd is a containerd with the shipped kuasar snippet (proxy
// sandboxer and "kuasar" runtime handler) and the stock runc handler, its
// sockets and directories under one directory, with the kuasar sandboxer
// serving it and the CRI scenarios' images imported.
type Containerd struct {
	Proc             *Process
	Dir, Sock, TTRPC string
	Sandboxer        *Sandboxer
	Runtime          cri.RuntimeServiceClient
	crictl, ctr      string
	conn             *grpc.ClientConn
}

// StartContainerd starts kuasar-sandboxer (sandboxerBin; its shim must sit
// next to it) and containerd under dir and imports the images. status
// reports each step for a progress line.
func StartContainerd(ctx context.Context, sandboxerBin, dir string, status func(string)) (_ *Containerd, retErr error) {
	bin, err := Tool("containerd")
	if err != nil {
		return nil, err
	}
	shim, err := Tool("containerd-shim-runc-v2")
	if err != nil {
		return nil, err
	}
	if _, err := Tool("runc"); err != nil {
		return nil, err
	}
	c := &Containerd{Dir: dir, Sock: filepath.Join(dir, "c.sock"), TTRPC: filepath.Join(dir, "c.sock.ttrpc")}
	if c.crictl, err = Tool("crictl"); err != nil {
		return nil, err
	}
	if c.ctr, err = Tool("ctr"); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			c.Close()
		}
	}()
	status("starting kuasar-sandboxer")
	if c.Sandboxer, err = StartSandboxer(ctx, sandboxerBin, filepath.Join(dir, "k"), SandboxerOptions{Containerd: c.Sock, ContainerdTTRPC: c.TTRPC}); err != nil {
		return nil, err
	}
	cfg := configs.PrivateContainerd{Dir: dir, GRPC: c.Sock, TTRPC: c.TTRPC, Sandboxer: c.Sandboxer.Sock, Runc: true}.Config()
	p := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	path := filepath.Dir(sandboxerBin) + ":" + filepath.Dir(shim) + ":" + os.Getenv("PATH")
	status("starting containerd")
	if c.Proc, err = Start([]string{"PATH=" + path}, bin, "--config", p, "--log-level", "warn"); err != nil {
		return nil, err
	}
	if err := WaitSocket(ctx, c.Sock, 60*time.Second, c.Proc); err != nil {
		return nil, err
	}
	if c.conn, err = grpc.NewClient("unix://"+c.Sock, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return nil, err
	}
	c.Runtime = cri.NewRuntimeServiceClient(c.conn)
	status("importing images")
	if err := c.importImages(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Containerd) importImages(ctx context.Context) error {
	files, err := images.BusyboxFiles(BusyboxPath, "sh", "sleep", "echo")
	if err != nil {
		return fmt.Errorf("%w: install busybox-static (make deps)", err)
	}
	host := ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	pause, err := images.BuildLinuxImage(ctx, files, ocispec.ImageConfig{Entrypoint: []string{"/bin/sleep", "2147483647"}}, host)
	if err != nil {
		return err
	}
	echo, err := images.BuildLinuxImage(ctx, files, ocispec.ImageConfig{Entrypoint: []string{"/bin/echo"}}, host)
	if err != nil {
		return err
	}
	hello, err := images.BuildWasmImage(ctx, fixtures.Hello, "hello.wasm")
	if err != nil {
		return err
	}
	for _, im := range []struct {
		img           *images.MemoryImage
		ref, platform string
	}{{pause, PauseImage, ""}, {echo, BusyboxEchoImage, ""}, {hello, WasmHelloImage, "wasi/wasm"}} {
		p := filepath.Join(c.Dir, "img.tar")
		if err := im.img.WriteArchiveFile(p, im.ref); err != nil {
			return err
		}
		args := []string{"-a", c.Sock, "-n", "k8s.io", "images", "import"}
		if im.platform != "" {
			args = append(args, "--platform", im.platform)
		}
		out, err := exec.CommandContext(ctx, c.ctr, append(args, p)...).CombinedOutput()
		os.Remove(p)
		if err != nil {
			return fmt.Errorf("ctr images import %s: %w: %s", im.ref, err, out)
		}
	}
	return nil
}

// Crictl runs crictl against this containerd and returns its trimmed output.
func (c *Containerd) Crictl(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"--runtime-endpoint", "unix://" + c.Sock, "--image-endpoint", "unix://" + c.Sock, "--timeout", "60s"}, args...)
	cmd := exec.CommandContext(ctx, c.crictl, full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, tail(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// CrictlCommand is the crictl command line for args, for reproduce lines.
func (c *Containerd) CrictlCommand(args ...string) string {
	return strings.Join(append([]string{c.crictl, "--runtime-endpoint", "unix://" + c.Sock}, args...), " ")
}

// Close removes every pod (so the sandboxer shuts its sandboxes down),
// then stops containerd and the sandboxer.
func (c *Containerd) Close() {
	if c.Runtime != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if pods, err := c.Runtime.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{}); err == nil {
			for _, p := range pods.Items {
				c.Runtime.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: p.Id})
				c.Runtime.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: p.Id})
			}
		}
		cancel()
	}
	if c.conn != nil {
		c.conn.Close()
	}
	if c.Proc != nil {
		c.Proc.Stop(20 * time.Second)
	}
	if c.Sandboxer != nil {
		c.Sandboxer.Close()
	}
	UnmountUnder(c.Dir)
}

// PodConfig is the CRI pod configuration the scenarios use: host network
// (no CNI here), logs under the containerd directory.
func (c *Containerd) PodConfig(name string) *cri.PodSandboxConfig {
	return &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Namespace: "default", Uid: name},
		LogDirectory: filepath.Join(c.Dir, "logs", name),
		Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE}}},
	}
}

// RunPod runs one pod with one short container through the CRI API, as
// kubelet does: RunPodSandbox, CreateContainer, StartContainer, poll
// ContainerStatus until exited; it returns the time to that point, then
// stops and removes the pod (not counted).
func (c *Containerd) RunPod(ctx context.Context, name, handler, image string, args []string) (time.Duration, error) {
	start := time.Now()
	podCfg := c.PodConfig(name)
	pod, err := c.Runtime.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: podCfg, RuntimeHandler: handler})
	if err != nil {
		return 0, fmt.Errorf("RunPodSandbox (%s): %w", handler, err)
	}
	defer func() {
		ctx := context.WithoutCancel(ctx)
		c.Runtime.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId})
		c.Runtime.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId})
	}()
	ctr, err := c.Runtime.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, SandboxConfig: podCfg,
		Config: &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: name}, Image: &cri.ImageSpec{Image: image}, Args: args, LogPath: name + ".log"}})
	if err != nil {
		return 0, fmt.Errorf("CreateContainer (%s): %w", handler, err)
	}
	if _, err := c.Runtime.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
		return 0, fmt.Errorf("StartContainer (%s): %w", handler, err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		st, err := c.Runtime.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: ctr.ContainerId})
		if err == nil && st.Status.State == cri.ContainerState_CONTAINER_EXITED {
			if st.Status.ExitCode != 0 {
				return 0, fmt.Errorf("%s container exited %d: %s", handler, st.Status.ExitCode, st.Status.Message)
			}
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s container did not exit in 60 s: %v", handler, err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond): // polling interval
		}
	}
	return time.Since(start), nil
}
