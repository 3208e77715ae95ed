// Package demo is `kuasar demo` (and `make demo`): kuasar's main job, pods
// under containerd, in one command. It starts a private containerd and
// kuasar-sandboxer under one temporary directory (internal/stack), runs a
// Wasm pod (handler "kuasar", the hello module on wazero) and a VM pod
// (handler "kuasar-vm", busybox in a QEMU micro-VM) through crictl, prints
// their output, exit codes and the time each CRI step took, and removes
// everything: pods, processes, mounts, sockets and files, also when it is
// interrupted (^C, SIGTERM).
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/stack"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// Image references the demo imports into its containerd.
const (
	WasmImage = "docker.io/library/kuasar-demo-hello:wasm"
	VMImage   = "docker.io/library/kuasar-demo-busybox:vm"
)

// BusyboxPath is Debian's busybox-static binary, the VM pod's only program.
const BusyboxPath = "/bin/busybox"

// Options configure Run.
type Options struct {
	// Out receives the demo's report.
	Out io.Writer
	// Stack configures the private containerd and sandboxer (tools,
	// binaries, parent directory).
	Stack stack.Options
	// NoVM runs the Wasm pod only (hosts without QEMU or a guest kernel).
	NoVM bool
}

// Report is what Run did, for tests and callers that check it.
type Report struct {
	// Dir is the stack's directory (removed when Run returns).
	Dir string
	// Pods are the pods run, in order.
	Pods []PodReport
}

// PodReport is one pod's result.
type PodReport struct {
	// Kind is "wasm" or "vm".
	Kind string
	stack.PodResult
}

// Run runs the demo. It returns ctx's error when interrupted, after
// removing everything; the Report holds what was done until then.
func Run(ctx context.Context, o Options) (rep Report, err error) {
	w := o.Out
	if w == nil {
		w = io.Discard
	}
	pods, err := demoPods(o.NoVM)
	if err != nil {
		return rep, err
	}
	fmt.Fprintln(w, "kuasar demo: kuasar's main job, pods under containerd, on a private containerd and kuasar-sandboxer")
	t := time.Now()
	s, err := stack.Start(ctx, o.Stack)
	if err != nil {
		return rep, err
	}
	rep.Dir = s.Dir
	defer func() {
		t := time.Now()
		fmt.Fprintf(w, "\ncleaning up: removing pods, stopping containerd and kuasar-sandboxer, unmounting and removing %s\n", s.Dir)
		if cerr := s.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean-up of %s: %w", s.Dir, cerr))
			return
		}
		fmt.Fprintf(w, "  done in %v: nothing left\n", ms(time.Since(t)))
	}()
	fmt.Fprintf(w, "\nstarted in %v, everything under %s:\n", ms(time.Since(t)), s.Dir)
	fmt.Fprintf(w, "  containerd        %s (pid %d), config %s\n", s.Tools.Containerd, s.ContainerdPid(), s.ContainerdConfig)
	fmt.Fprintf(w, "  kuasar-sandboxer  %s (pid %d), Sandbox API %s\n", filepath.Join(s.BinDir, "kuasar-sandboxer"), s.SandboxerPid(), s.SandboxerSock)
	fmt.Fprintf(w, "  crictl            %s %s\n", s.Tools.Crictl, strings.Join(s.CrictlArgs()[:4], " "))
	t = time.Now()
	if _, err := s.Crictl(ctx, "version"); err != nil {
		return rep, interruptedOr(w, ctx, err)
	}
	fmt.Fprintf(w, "  one crictl call (crictl version: start crictl, one CRI round trip) takes %v here; each step timed below is one or more crictl calls\n", ms(time.Since(t)))

	for _, p := range pods {
		if err := ctx.Err(); err != nil {
			return rep, interrupted(w, err)
		}
		fmt.Fprintf(w, "\n%s pod: runtime handler %q, image %s\n", strings.ToUpper(p.kind), p.pod.Handler, p.pod.Image)
		fmt.Fprintf(w, "  %s\n", p.what)
		img, err := p.image(ctx)
		if err != nil {
			return rep, err
		}
		if err := s.ImportImage(ctx, img, p.pod.Image, p.platform); err != nil {
			return rep, interruptedOr(w, ctx, err)
		}
		res, err := s.RunPod(ctx, p.pod)
		if err != nil {
			return rep, interruptedOr(w, ctx, fmt.Errorf("%w\n%s", err, s.Logs()))
		}
		rep.Pods = append(rep.Pods, PodReport{Kind: p.kind, PodResult: res})
		fmt.Fprintln(w, "  output:")
		for _, line := range strings.Split(strings.TrimRight(res.Logs, "\n"), "\n") {
			fmt.Fprintf(w, "    | %s\n", line)
		}
		fmt.Fprintf(w, "  exit code %d\n", res.ExitCode)
		fmt.Fprintf(w, "  timings: runp %v, create %v, start to exit %v, remove %v; total %v\n",
			ms(res.RunPodSandbox), ms(res.CreateContainer), ms(res.StartToExit), ms(res.Remove), ms(res.Total))
	}
	return rep, nil
}

// interrupted says so and returns err (ctx's error).
func interrupted(w io.Writer, err error) error {
	fmt.Fprintln(w, "\ninterrupted")
	return err
}

// interruptedOr returns ctx's error when ctx ended (the step failed
// because of the interrupt), else err.
func interruptedOr(w io.Writer, ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return interrupted(w, ctx.Err())
	}
	return err
}

func ms(d time.Duration) time.Duration {
	if d > 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// demoPod is one pod of the demo and how to build its image.
type demoPod struct {
	kind, what string
	pod        stack.Pod
	platform   string
	image      func(context.Context) (*images.MemoryImage, error)
}

// demoPods lists the pods, checking first what the VM pod needs so that a
// missing piece is named before anything starts.
func demoPods(noVM bool) ([]demoPod, error) {
	pods := []demoPod{{
		kind: "wasm",
		what: "the hello module runs inside kuasar-sandboxer on wazero: no VM, no process per pod",
		pod: stack.Pod{Name: "demo-wasm", Handler: stack.HandlerWasm, Image: WasmImage,
			Args: []string{"from", "a", "Wasm", "pod"}, Timeout: time.Minute},
		platform: "wasi/wasm",
		image: func(ctx context.Context) (*images.MemoryImage, error) {
			return images.BuildWasmImage(ctx, fixtures.Hello, "hello.wasm")
		},
	}}
	if noVM {
		return pods, nil
	}
	if err := vmReady(); err != nil {
		return nil, err
	}
	pods = append(pods, demoPod{
		kind: "vm",
		what: "busybox runs in a QEMU micro-VM booted for the pod, with kuasar's guest agent",
		pod: stack.Pod{Name: "demo-vm", Handler: stack.HandlerVM, Image: VMImage,
			Command: []string{"/bin/sh", "-c"},
			Args:    []string{"echo hello from a VM pod; echo guest kernel: $(uname -sr); echo cpus: $(grep -c ^processor /proc/cpuinfo)"},
			Timeout: 5 * time.Minute},
		image: func(ctx context.Context) (*images.MemoryImage, error) {
			files, err := images.BusyboxFiles(BusyboxPath, "sh", "echo", "uname", "grep")
			if err != nil {
				return nil, fmt.Errorf("%w: run make deps (apt-get install busybox-static)", err)
			}
			return images.BuildLinuxImage(ctx, files, ocispec.ImageConfig{Entrypoint: []string{"/bin/sh", "-c"}},
				ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH})
		},
	})
	return pods, nil
}

// vmReady checks that QEMU, the guest kernel and initramfs the sandboxer
// will use (its embedded defaults) and busybox are there.
func vmReady() error {
	q := vmbackend.DefaultConfig().QEMU
	for _, f := range []struct{ path, fix string }{
		{q.Path, "run make deps (apt-get install qemu-system-x86)"},
		{q.Kernel, "run make guest (it builds the guest kernel and initramfs and links them there)"},
		{q.Initramfs, "run make guest (it builds the guest kernel and initramfs and links them there)"},
		{BusyboxPath, "run make deps (apt-get install busybox-static)"},
	} {
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("the VM pod needs %s: %s, or pass --no-vm: %w", f.path, f.fix, errdefs.ErrNotFound)
		}
	}
	return nil
}
