package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

// goroutines reads the sandboxer's goroutine count from its debug socket.
func goroutines(t testing.TB, e *testenv.Env) int {
	t.Helper()
	hc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", e.SandboxerDebug)
	}}}
	resp, err := hc.Get("http://sandboxer/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	// First line: "goroutine profile: total N".
	line, _, _ := strings.Cut(string(b), "\n")
	n, err := strconv.Atoi(strings.TrimPrefix(line, "goroutine profile: total "))
	if err != nil {
		t.Fatalf("goroutine profile header %q", line)
	}
	return n
}

func fds(t testing.TB, e *testenv.Env) int {
	t.Helper()
	n, err := testenv.FDCount(e.Sandboxer.Pid())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestHundredPodsNoLeak runs 100 hello pods concurrently and checks that the
// sandboxer's fds, goroutines, sandbox directories and mounts return to
// their baseline.
func TestHundredPodsNoLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("100 pods")
	}
	e := testenv.NewEnv(t)
	const ref = "docker.io/kuasar/hello-many:test"
	importWasm(t, e, fixtures.Hello, "hello.wasm", ref, false)
	if err := runTenant(t, e, "warm", ref); err != nil { // warm caches and pools
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	baseFD, baseG := fds(t, e), goroutines(t, e)

	const n, parallel = 100, 16
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := runTenant(t, e, fmt.Sprintf("p%03d", i), ref); err != nil {
				errs <- fmt.Errorf("pod %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.Fatalf("sandboxer log tail:\n%s", tail(e.Sandboxer.Output(), 40))
	}
	var gotFD, gotG int
	for range 50 { // let connection goroutines wind down
		gotFD, gotG = fds(t, e), goroutines(t, e)
		if gotFD <= baseFD+2 && gotG <= baseG+5 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("sandboxer fds %d -> %d, goroutines %d -> %d", baseFD, gotFD, baseG, gotG)
	if gotFD > baseFD+2 {
		t.Errorf("fd leak: %d before, %d after 100 pods", baseFD, gotFD)
	}
	if gotG > baseG+5 {
		t.Errorf("goroutine leak: %d before, %d after 100 pods", baseG, gotG)
	}
	if dirs := sandboxDirs(e); len(dirs) != 0 {
		t.Errorf("sandbox dirs left: %d", len(dirs))
	}
	if m := testenv.MountsUnder(e.SandboxerState); len(m) != 0 {
		t.Errorf("mounts left under the sandboxer state: %v", m)
	}
	if m := append(testenv.MountsUnder(e.Dir), testenv.MountsUnder(e.SandboxerState)...); len(m) != 0 {
		t.Errorf("mounts left under the test dir: %v", m)
	}
}

// TestBadInput checks that each kind of bad input gets a clear error and
// leaves nothing behind.
func TestBadInput(t *testing.T) {
	e := testenv.NewEnv(t)
	ctx := context.Background()
	sbc := sandboxerClient(t, e)

	t.Run("unknown sandbox ID", func(t *testing.T) {
		_, err := sbc.Status(ctx, &api.ControllerStatusRequest{SandboxID: "no-such-sandbox"})
		if !errors_Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "no-such-sandbox") {
			t.Fatalf("status of unknown sandbox: %v", err)
		}
		if _, err := sbc.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: "no-such-sandbox"}); !errors_Is(err, errdefs.ErrNotFound) {
			t.Fatalf("shutdown of unknown sandbox: %v", err)
		}
	})
	t.Run("task in a sandbox that does not exist", func(t *testing.T) {
		const ref = "docker.io/kuasar/hello-bad:test"
		importWasm(t, e, fixtures.Hello, "hello.wasm", ref, false)
		podCfg := podJSON(t, e, "ghost", nil)
		out, err := e.CrictlErr("create", "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", ctrJSON(t, e, "ghost", ref, nil, false), podCfg)
		if err == nil || !strings.Contains(err.Error(), "not found") {
			t.Fatalf("create in a missing pod: %q %v", out, err)
		}
	})

	// An image of the Wasm platform whose entrypoint names a module that
	// neither its rootfs nor its layers hold.
	noModule, err := images.BuildLinuxImage(ctx, []images.File{{Path: "/readme.txt", Mode: 0o644, Data: []byte("no module here")}},
		ocispec.ImageConfig{Entrypoint: []string{"/app.wasm"}}, ocispec.Platform{OS: "wasi", Architecture: "wasm"})
	if err != nil {
		t.Fatal(err)
	}
	corrupt, err := images.BuildWasmImage(ctx, fixtures.Truncated, "hello.wasm")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		img  *images.MemoryImage
		want string // substring of the error
	}{
		{name: "spec without a module", img: noModule, want: "app.wasm"},
		{name: "corrupt module image", img: corrupt, want: "hello.wasm"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ref := fmt.Sprintf("docker.io/kuasar/bad%d:test", i)
			e.ImportImagePlatform(tc.img, ref, "wasi/wasm")
			podCfg := podJSON(t, e, fmt.Sprintf("bad%d", i), nil)
			pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
			t.Cleanup(func() { e.CrictlErr("rmp", "-f", pod) })
			ctr, err := e.CrictlErr("create", pod, ctrCmdJSON(t, e, fmt.Sprintf("bad%d", i), ref, nil), podCfg)
			var msg string
			if err != nil {
				msg = err.Error()
			} else {
				_, err := e.CrictlErr("start", ctr)
				if err == nil {
					st := waitState(t, e, ctr, "CONTAINER_EXITED", 10*time.Second)
					t.Fatalf("bad container started: %v", st)
				}
				msg = err.Error()
				e.CrictlErr("rm", "-f", ctr)
			}
			if !strings.Contains(msg, tc.want) {
				t.Fatalf("error %q does not name %q", msg, tc.want)
			}
			t.Logf("error: %s", lastLine(msg))
			e.Crictl("stopp", pod)
			e.Crictl("rmp", pod)
			if dirs := sandboxDirs(e); len(dirs) != 0 {
				t.Fatalf("left: %v", dirs)
			}
			if m := append(testenv.MountsUnder(e.Dir), testenv.MountsUnder(e.SandboxerState)...); len(m) != 0 {
				t.Fatalf("mounts left: %v", m)
			}
		})
	}
}

func errors_Is(err error, kind error) bool {
	return err != nil && errdefsIs(errgrpc.ToNative(err), kind)
}

func errdefsIs(err, kind error) bool {
	switch kind {
	case errdefs.ErrNotFound:
		return errdefs.IsNotFound(err)
	}
	return false
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}

// TestKill9Recovery kills the sandboxer with SIGKILL under a running Wasm
// pod, restarts it, and checks that the pod is reported exited (137) and can
// be removed without leaving anything behind.
func TestKill9Recovery(t *testing.T) {
	e := testenv.NewEnv(t)
	const ref = "docker.io/kuasar/wasi-kill:test"
	importWasm(t, e, fixtures.WASI, "wasi.wasm", ref, false)
	podCfg := podJSON(t, e, "victim", nil)
	pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
	ctr := e.Crictl("create", pod, ctrJSON(t, e, "victim", ref, []string{"sleep", "3600"}, false), podCfg)
	e.Crictl("start", ctr)
	waitState(t, e, ctr, "CONTAINER_RUNNING", 10*time.Second)

	e.Sandboxer.Kill9()
	e.StartSandboxer()
	t.Logf("sandboxer restarted after SIGKILL")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sbc := sandboxerClient(t, e)
	st, err := sbc.Status(ctx, &api.ControllerStatusRequest{SandboxID: pod, Verbose: true})
	if err != nil {
		t.Fatalf("status after restart: %v\n%s", err, tail(e.Sandboxer.Output(), 30))
	}
	if st.State != "SANDBOX_NOTREADY" || st.Info["exit_status"] != "137" {
		t.Fatalf("recovered status %+v", st)
	}
	w, err := sbc.Wait(ctx, &api.ControllerWaitRequest{SandboxID: pod})
	if err != nil || w.ExitStatus != 137 {
		t.Fatalf("wait after restart: %+v %v", w, err)
	}
	// containerd saw the task socket close and retries its exit handling
	// (task Delete) with back-off; the recovered sandbox answers it.
	waitState(t, e, ctr, "CONTAINER_EXITED", 30*time.Second)
	if out, err := e.CrictlErr("rm", "-f", ctr); err != nil {
		t.Fatalf("rm: %s %v\n%s\n%s", out, err, tail(e.Sandboxer.Output(), 30), tail(e.Containerd.Output(), 30))
	}
	e.Crictl("stopp", pod)
	e.Crictl("rmp", pod)
	if dirs := sandboxDirs(e); len(dirs) != 0 {
		t.Fatalf("left after rmp: %v\n%s", dirs, tail(e.Sandboxer.Output(), 30))
	}
	if m := append(testenv.MountsUnder(e.Dir), testenv.MountsUnder(e.SandboxerState)...); len(m) != 0 {
		t.Fatalf("mounts left: %v", m)
	}
}
