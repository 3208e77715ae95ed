package vmbackend

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
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/task/forward"
	"github.com/kuasar-go/kuasar/vm"
)

// RunConfig configures RunWorkload.
type RunConfig struct {
	// Hypervisor names the hypervisor ("qemu" when empty).
	Hypervisor string
	// Config is its [hypervisor.NAME] section.
	Config vm.Config
	// StateDir is a parent directory for the run's private state (a fresh
	// subdirectory is made and removed); os.TempDir() when empty.
	StateDir string
	// AgentTimeout bounds the wait for the guest agent (DefaultAgentTimeout).
	AgentTimeout time.Duration
	// Resources size the VM.
	Resources backend.Resources
	// MkfsErofs is the mkfs.erofs binary used when Config.RootfsMode is
	// "block" (looked up in PATH when empty).
	MkfsErofs string
}

// Process is the container process RunWorkload starts.
type Process struct {
	// Args is the command and its arguments (required).
	Args []string
	// Env holds KEY=VALUE pairs.
	Env []string
	// Cwd is the working directory inside the rootfs ("/" when empty).
	Cwd string
	// UID and GID run the process as that user.
	UID, GID uint32
	// Hostname is the container's hostname.
	Hostname string
}

// runContainerID is the container's id inside the run's sandbox.
const runContainerID = "workload"

// RunWorkload boots a VM, runs one container whose root filesystem is the
// unpacked image at rootfs, streams its stdio (stdin may be nil), and tears
// everything down. With rootfs_mode "block" the rootfs reaches the guest as
// an erofs image on virtio-blk (built with mkfs.erofs into the run's state
// directory) under a tmpfs-backed overlay, instead of through the 9p
// share. It returns the container's exit code; ctx cancellation
// kills the container. This is what `kuasar run --isolation vm` calls when
// no containerd is involved.
func RunWorkload(ctx context.Context, cfg RunConfig, rootfs string, p Process, stdin io.Reader, stdout, stderr io.Writer) (exitCode int, retErr error) {
	if len(p.Args) == 0 {
		return -1, fmt.Errorf("no command to run: the image has no entrypoint/cmd, pass one: %w", errdefs.ErrInvalidArgument)
	}
	abs, err := filepath.Abs(rootfs)
	if err != nil {
		return -1, err
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		return -1, fmt.Errorf("rootfs %s is not a directory: %w", rootfs, errdefs.ErrInvalidArgument)
	}
	name := cfg.Hypervisor
	if name == "" {
		name = vm.QEMU
	}
	opts := []Option{WithHypervisor(name, cfg.Config), WithDefaultHypervisor(name)}
	if cfg.AgentTimeout > 0 {
		opts = append(opts, WithAgentTimeout(cfg.AgentTimeout))
	}
	b, err := New(ctx, opts...)
	if err != nil {
		return -1, err
	}
	state, err := os.MkdirTemp(cfg.StateDir, "kuasar-vm-run-")
	if err != nil {
		return -1, err
	}
	defer func() {
		// Never through a mount left behind: it could be the user's rootfs.
		if err := removeUnmounted(state); err != nil && retErr == nil {
			retErr = err
		}
	}()
	id := filepath.Base(state)
	sb := backend.Sandbox{ID: id, StateDir: filepath.Join(state, "sandbox"), Hostname: p.Hostname, Resources: cfg.Resources, Hypervisor: name}
	var blk *blockRootfs
	if cfg.Config.RootfsMode == vm.ShareBlock {
		// Built per run into the run's state directory (removed with it):
		// about 2.4 s per GB of rootfs, nothing for small images; a cache
		// keyed by path and mtime would miss changes below the top directory.
		blk = &blockRootfs{cid: runContainerID, image: filepath.Join(state, "rootfs.erofs"), device: vm.GuestDiskPath(0)}
		if err := buildErofs(ctx, cfg.MkfsErofs, abs, blk.image); err != nil {
			return -1, err
		}
	}
	bi, err := b.start(ctx, sb, blk)
	if err != nil {
		return -1, err
	}
	inst := bi.(*Instance)
	defer func() {
		if err := inst.Shutdown(context.WithoutCancel(ctx)); err != nil && retErr == nil {
			retErr = err
		}
	}()

	bundle := filepath.Join(state, "bundle")
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return -1, err
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	spec := &specs.Spec{
		Version:  specs.Version,
		Hostname: p.Hostname,
		Process: &specs.Process{
			Args: p.Args, Env: p.Env, Cwd: cwd,
			User: specs.User{UID: p.UID, GID: p.GID},
		},
		Root: &specs.Root{Path: abs},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.UTSNamespace}, {Type: specs.IPCNamespace},
		}},
	}
	sj, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), sj, 0o600); err != nil {
		return -1, err
	}
	tasks := inst.tasks
	if _, err := tasks.CreateWithStreams(ctx, &taskAPI.CreateTaskRequest{ID: runContainerID, Bundle: bundle}, forward.Streams{Stdin: stdin, Stdout: stdout, Stderr: stderr}); err != nil {
		return -1, fmt.Errorf("create container: %w", err)
	}
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: runContainerID}); err != nil {
		return -1, fmt.Errorf("start container: %w", err)
	}
	inst.timings.ContainerStarted = time.Since(inst.started)
	waitCtx := context.WithoutCancel(ctx)
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			kctx, cancel := context.WithTimeout(waitCtx, 5*time.Second)
			_, _ = tasks.Kill(kctx, &taskAPI.KillRequest{ID: runContainerID, Signal: uint32(syscall.SIGKILL), All: true})
			cancel()
		case <-done:
		}
	}()
	w, err := tasks.Wait(waitCtx, &taskAPI.WaitRequest{ID: runContainerID})
	close(done)
	if err != nil {
		return -1, fmt.Errorf("wait for container: %w", err)
	}
	dctx, cancel := context.WithTimeout(waitCtx, 10*time.Second)
	_, _ = tasks.Delete(dctx, &taskAPI.DeleteRequest{ID: runContainerID})
	cancel()
	if ctx.Err() != nil {
		return int(w.ExitStatus), ctx.Err()
	}
	return int(w.ExitStatus), nil
}
