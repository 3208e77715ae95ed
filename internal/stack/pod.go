package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Pod is a one-container pod run to completion through crictl.
type Pod struct {
	// Name names the pod and its container (unique within the stack).
	Name string
	// Handler is the CRI runtime handler (HandlerWasm, HandlerVM,
	// HandlerRunc).
	Handler string
	// Image is the container's image reference, already in containerd.
	Image string
	// Command replaces the image's entrypoint when set; Args are its
	// arguments (or the entrypoint's).
	Command, Args []string
	// Annotations are the pod's annotations (e.g. kuasar.io/isolation).
	Annotations map[string]string
	// Timeout bounds the container's run from start to exit (default 2 min).
	Timeout time.Duration
}

// PodResult is what RunPod observed: IDs, output, exit code and the time
// each CRI step took.
type PodResult struct {
	// PodID and ContainerID are CRI's IDs.
	PodID, ContainerID string
	// Logs is the container's output, both streams, without CRI's
	// timestamps and stream tags.
	Logs string
	// ExitCode is the container's exit status.
	ExitCode int
	// RunPodSandbox (crictl runp), CreateContainer (crictl create),
	// StartToExit (crictl start until CRI reports the container exited),
	// Remove (crictl rm, stopp, rmp) and Total are the steps' durations,
	// each including crictl's own start.
	RunPodSandbox, CreateContainer, StartToExit, Remove, Total time.Duration
}

// RunPod runs p to completion: runp, create, start, waits (polling CRI
// with a deadline) until the container exits, reads its logs and exit
// code, then removes the container and the pod. The pod is removed also
// when a step fails or ctx ends.
func (s *Stack) RunPod(ctx context.Context, p Pod) (res PodResult, err error) {
	if p.Timeout <= 0 {
		p.Timeout = 2 * time.Minute
	}
	dir := filepath.Join(s.Dir, "pods", p.Name)
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		return res, err
	}
	podCfg, err := writeJSON(dir, "pod.json", map[string]any{
		"metadata":      map[string]any{"name": p.Name, "namespace": "default", "uid": p.Name + "-uid"},
		"log_directory": filepath.Join(dir, "logs"),
		"annotations":   p.Annotations,
		// Host network: no CNI needed.
		"linux": map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
	})
	if err != nil {
		return res, err
	}
	ctr := map[string]any{
		"metadata": map[string]any{"name": p.Name},
		"image":    map[string]any{"image": p.Image},
		"log_path": p.Name + ".log",
	}
	if p.Command != nil {
		ctr["command"] = p.Command
	}
	if p.Args != nil {
		ctr["args"] = p.Args
	}
	ctrCfg, err := writeJSON(dir, "ctr.json", ctr)
	if err != nil {
		return res, err
	}

	begin := time.Now()
	t := begin
	res.PodID, err = s.Crictl(ctx, "runp", "--runtime", p.Handler, podCfg)
	res.RunPodSandbox = time.Since(t)
	if err != nil {
		return res, fmt.Errorf("pod %s: %w", p.Name, err)
	}
	defer func() {
		// Remove even when ctx ended (interrupt): a fresh context,
		// bounded.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		t := time.Now()
		var errs []error
		if res.ContainerID != "" {
			if _, e := s.Crictl(rctx, "rm", "-f", res.ContainerID); e != nil {
				errs = append(errs, e)
			}
		}
		if _, e := s.Crictl(rctx, "stopp", res.PodID); e != nil {
			errs = append(errs, e)
		}
		if _, e := s.Crictl(rctx, "rmp", "-f", res.PodID); e != nil {
			errs = append(errs, e)
		}
		res.Remove = time.Since(t)
		res.Total = time.Since(begin)
		if err == nil {
			err = errors.Join(errs...)
		}
	}()
	t = time.Now()
	res.ContainerID, err = s.Crictl(ctx, "create", res.PodID, ctrCfg, podCfg)
	res.CreateContainer = time.Since(t)
	if err != nil {
		return res, fmt.Errorf("pod %s: %w", p.Name, err)
	}
	t = time.Now()
	if _, err = s.Crictl(ctx, "start", res.ContainerID); err != nil {
		return res, fmt.Errorf("pod %s: %w", p.Name, err)
	}
	st, err := s.waitExited(ctx, res.ContainerID, p.Timeout)
	res.StartToExit = time.Since(t)
	if err != nil {
		return res, fmt.Errorf("pod %s: %w", p.Name, err)
	}
	res.ExitCode = st.ExitCode
	if err = s.waitLogComplete(ctx, st.LogPath, 30*time.Second); err != nil {
		return res, fmt.Errorf("pod %s: %w", p.Name, err)
	}
	res.Logs, err = readCRILog(st.LogPath)
	if err != nil {
		return res, fmt.Errorf("pod %s: %w", p.Name, err)
	}
	return res, nil
}

func writeJSON(dir, name string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, b, 0o600)
}

// containerStatus is the part of `crictl inspect` RunPod reads.
type containerStatus struct {
	State    string `json:"state"`
	ExitCode int    `json:"exitCode"`
	LogPath  string `json:"logPath"`
}

// waitExited polls CRI until the container has exited, ctx ends or
// timeout passes.
func (s *Stack) waitExited(ctx context.Context, id string, timeout time.Duration) (containerStatus, error) {
	deadline := time.Now().Add(timeout)
	var st containerStatus
	for {
		out, err := s.Crictl(ctx, "inspect", "-o", "json", id)
		if err != nil {
			return st, err
		}
		var v struct {
			Status containerStatus `json:"status"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			return st, fmt.Errorf("crictl inspect %s: %w", id, err)
		}
		st = v.Status
		if st.State == "CONTAINER_EXITED" {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("container %s is still %s after %v: %w", id, st.State, timeout, context.DeadlineExceeded)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitLogComplete waits until containerd no longer holds the exited
// container's log file open: CRI reports EXITED once the output FIFOs are
// drained, but the last bytes may still be on their way into the file.
func (s *Stack) waitLogComplete(ctx context.Context, logPath string, timeout time.Duration) error {
	if p, err := filepath.EvalSymlinks(logPath); err == nil {
		logPath = p
	}
	fdDir := fmt.Sprintf("/proc/%d/fd", s.ContainerdPid())
	deadline := time.Now().Add(timeout)
	for {
		entries, err := os.ReadDir(fdDir)
		if err != nil {
			return fmt.Errorf("list containerd's fds: %w", err)
		}
		open := false
		for _, en := range entries {
			if l, err := os.Readlink(filepath.Join(fdDir, en.Name())); err == nil && l == logPath {
				open = true
				break
			}
		}
		if !open {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd still writes the log %s %v after the container exited: %w", logPath, timeout, context.DeadlineExceeded)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// readCRILog returns the content of a CRI log file (lines "TIME STREAM
// TAG CONTENT"; tag P marks a partial line continued by the next).
func readCRILog(p string) (string, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("container log: %w", err)
	}
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		f := strings.SplitN(line, " ", 4)
		if len(f) < 3 {
			continue
		}
		content := ""
		if len(f) == 4 {
			content = f[3]
		}
		b.WriteString(content)
		if f[2] != "P" {
			b.WriteByte('\n')
		}
	}
	return b.String(), nil
}
