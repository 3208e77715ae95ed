package vmbackend_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// runContainerID is the container id runWorkload uses.
const runContainerID = "workload"

// runWorkload runs one container, whose rootfs is the directory rootfs, in
// a fresh VM sandbox of a QEMU backend made with cfg, through the backend
// contract the way `kuasar run --isolation vm` does: Backend.Start (told
// the rootfs before boot, for rootfs_mode "block", with mkfs as
// mkfs.erofs), the Task API's Create, Start, Wait and Delete with stdio
// through FIFOs, then Shutdown. Its state lives in a kuasar-vm-run-*
// directory under state, removed at the end. Cancelling ctx kills the
// container; runWorkload then returns ctx's error.
func runWorkload(ctx context.Context, cfg vm.Config, state, rootfs, mkfs string, args, env []string, stdin io.Reader, stdout, stderr io.Writer) (code int, retErr error) {
	ctx = namespaces.WithNamespace(ctx, "kuasar-test")
	bg := context.WithoutCancel(ctx)
	b, err := vmbackend.New(ctx, vmbackend.WithHypervisor(vm.QEMU, cfg), vmbackend.WithBootRootfs(runContainerID, rootfs, mkfs))
	if err != nil {
		return -1, err
	}
	dir, err := os.MkdirTemp(state, "kuasar-vm-run-")
	if err != nil {
		return -1, err
	}
	defer func() {
		if left := mountsUnder(dir); len(left) > 0 {
			retErr = fmt.Errorf("mounts left under %s: %v", dir, left)
			return
		}
		if err := os.RemoveAll(dir); err != nil && retErr == nil {
			retErr = err
		}
	}()
	bundle := filepath.Join(dir, "bundle")
	if err := os.Mkdir(bundle, 0o700); err != nil {
		return -1, err
	}
	spec := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{Args: args, Env: env, Cwd: "/"},
		Root:    &specs.Root{Path: rootfs},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.UTSNamespace}, {Type: specs.IPCNamespace},
		}},
	}
	sj, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), sj, 0o600); err != nil {
		return -1, err
	}
	sb := backend.Sandbox{ID: filepath.Base(dir), StateDir: filepath.Join(dir, "sandbox")}
	if err := os.Mkdir(sb.StateDir, 0o700); err != nil {
		return -1, err
	}
	inst, err := b.Start(ctx, sb)
	if err != nil {
		return -1, err
	}
	defer func() {
		if err := inst.Shutdown(bg); err != nil && retErr == nil {
			retErr = err
		}
	}()
	if stdin == nil {
		stdin = eofReader{}
	}
	fifos, err := cio.NewCreator(cio.WithStreams(stdin, stdout, stderr), cio.WithFIFODir(dir))(runContainerID)
	if err != nil {
		return -1, err
	}
	defer fifos.Close()
	io := fifos.Config()
	tasks := inst.Tasks()
	if _, err := tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: runContainerID, Bundle: bundle, Stdin: io.Stdin, Stdout: io.Stdout, Stderr: io.Stderr}); err != nil {
		fifos.Cancel()
		return -1, fmt.Errorf("create container: %w", err)
	}
	defer tasks.Delete(bg, &taskAPI.DeleteRequest{ID: runContainerID})
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: runContainerID}); err != nil {
		fifos.Cancel()
		return -1, fmt.Errorf("start container: %w", err)
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			kctx, cancel := context.WithTimeout(bg, 10*time.Second)
			_, _ = tasks.Kill(kctx, &taskAPI.KillRequest{ID: runContainerID, Signal: uint32(syscall.SIGKILL), All: true})
			cancel()
		case <-done:
		}
	}()
	w, err := tasks.Wait(bg, &taskAPI.WaitRequest{ID: runContainerID})
	close(done)
	if err != nil {
		return -1, fmt.Errorf("wait for container: %w", err)
	}
	if _, err := tasks.Delete(bg, &taskAPI.DeleteRequest{ID: runContainerID}); err != nil {
		return -1, fmt.Errorf("delete container: %w", err)
	}
	fifos.Wait()
	return int(w.ExitStatus), ctx.Err()
}

// eofReader is an empty stdin.
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
