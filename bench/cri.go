package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kuasar-go/kuasar/bench/internal/rig"
)

// containerd returns the run's containerd (with its sandboxer and images),
// starting it on first use; the CRI scenarios share it and it stops at the
// end of the run.
func (r *runner) containerd(ctx context.Context) (*rig.Containerd, error) {
	if c, ok := r.shared.values["containerd"].(*rig.Containerd); ok {
		return c, nil
	}
	bin, err := rig.Binary(r.o.Binary, "kuasar-sandboxer")
	if err != nil {
		return nil, err
	}
	if _, err := rig.Binary(r.o.Binary, "containerd-shim-kuasar-v1"); err != nil {
		return nil, err
	}
	// Short: unix socket paths must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "kbc")
	if err != nil {
		return nil, err
	}
	c, err := rig.StartContainerd(ctx, bin, dir, func(s string) { r.progress.status("%s", s) })
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if r.shared.values == nil {
		r.shared.values = map[string]any{}
	}
	r.shared.values["containerd"] = c
	r.shared.closers = append(r.shared.closers, func() { c.Close(); os.RemoveAll(dir) })
	return c, nil
}

func criScenario(ctx context.Context, r *runner) error {
	n := r.runs(30, 6)
	c, err := r.containerd(ctx)
	if err != nil {
		return err
	}
	kuasar := r.series("kuasar", "s", "RunPodSandbox (handler kuasar), CreateContainer, StartContainer of hello.wasm, ContainerStatus polled until exited", false)
	runc := r.series("runc", "s", "the same with containerd's runc handler (pause container + busybox echo hello)", true)
	r.target("kuasar", "runc", 4)
	return r.interleave(ctx, n, []arm{
		{s: kuasar, once: func(ctx context.Context, _ int) (float64, error) {
			d, err := c.RunPod(ctx, r.id("kw"), "kuasar", rig.WasmHelloImage, nil)
			return d.Seconds(), err
		}},
		{s: runc, once: func(ctx context.Context, _ int) (float64, error) {
			d, err := c.RunPod(ctx, r.id("rc"), "runc", rig.BusyboxEchoImage, []string{"hello"})
			return d.Seconds(), err
		}},
	})
}

func crictlScenario(ctx context.Context, r *runner) error {
	n := r.runs(20, 3)
	c, err := r.containerd(ctx)
	if err != nil {
		return err
	}
	writeJSON := func(name string, v any) (string, error) {
		b, err := json.Marshal(v)
		if err != nil {
			return "", err
		}
		p := filepath.Join(r.dir, name)
		return p, os.WriteFile(p, b, 0o644)
	}
	// One pod and container config per runtime, reused: each pod is
	// removed before the next starts.
	crictlArm := func(handler, image string, args []string, s *Series) (arm, error) {
		pod, err := writeJSON("pod-"+handler+".json", map[string]any{
			"metadata":      map[string]any{"name": "crictl-" + handler, "namespace": "default", "uid": "crictl-" + handler},
			"log_directory": filepath.Join(r.dir, "logs", handler),
			"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
		})
		if err != nil {
			return arm{}, err
		}
		cfg := map[string]any{"metadata": map[string]any{"name": "c"}, "image": map[string]any{"image": image}, "log_path": "c.log"}
		if args != nil {
			cfg["args"] = args
		}
		ctr, err := writeJSON("ctr-"+handler+".json", cfg)
		if err != nil {
			return arm{}, err
		}
		return arm{s: s, once: func(ctx context.Context, _ int) (float64, error) {
			start := time.Now()
			podID, err := c.Crictl(ctx, "runp", "--runtime", handler, pod)
			if err != nil {
				return 0, err
			}
			defer c.Crictl(context.WithoutCancel(ctx), "rmp", "-f", podID)
			ctrID, err := c.Crictl(ctx, "create", podID, ctr, pod)
			if err != nil {
				return 0, err
			}
			if _, err := c.Crictl(ctx, "start", ctrID); err != nil {
				return 0, err
			}
			for deadline := time.Now().Add(60 * time.Second); ; {
				out, err := c.Crictl(ctx, "inspect", "-o", "go-template", "--template", "{{.status.state}}", ctrID)
				if err == nil && strings.Contains(out, "CONTAINER_EXITED") {
					break
				}
				if time.Now().After(deadline) {
					return 0, fmt.Errorf("%s container did not exit in 60 s: %s %v", handler, out, err)
				}
				if ctx.Err() != nil {
					return 0, ctx.Err()
				}
			}
			return time.Since(start).Seconds(), nil
		}}, nil
	}
	ka, err := crictlArm("kuasar", rig.WasmHelloImage, nil, r.series("kuasar", "s", "crictl runp --runtime kuasar, create, start of hello.wasm, inspect until exited (four or more crictl processes)", false))
	if err != nil {
		return err
	}
	ra, err := crictlArm("runc", rig.BusyboxEchoImage, []string{"hello"}, r.series("runc", "s", "the same with the runc handler and busybox echo", true))
	if err != nil {
		return err
	}
	r.target("kuasar", "runc", 4)
	return r.interleave(ctx, n, []arm{ka, ra})
}
