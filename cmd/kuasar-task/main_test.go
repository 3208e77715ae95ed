package main

import (
	"context"
	"debug/elf"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	taskapi "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/kuasar-go/kuasar/task/agent/agentapi"
)

// buildAgent builds the binary exactly as the guest builder must:
// CGO_ENABLED=0, so it runs as /init with no libc in the initramfs. Under
// -short (unit tests only) the test is skipped instead.
func buildAgent(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; -short runs unit tests only")
	}
	out := filepath.Join(t.TempDir(), "kuasar-task")
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version=test-1", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

func TestBinaryIsStatic(t *testing.T) {
	bin := buildAgent(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		t.Errorf("ELF type %v, want ET_EXEC (a static, non-PIE executable)", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("binary has PT_INTERP: it is dynamically linked and cannot be /init; build with CGO_ENABLED=0")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) != 0 {
		t.Fatalf("binary needs shared libraries %v", libs)
	}
}

// TestBinaryServesContainer runs the real binary on a unix socket and runs
// a busybox container through it, so the re-exec helper is the real one.
func TestBinaryServesContainer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Fatalf("/bin/busybox missing (apt-get install busybox-static, or run make deps): %v", err)
	}
	bin := buildAgent(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	agent := exec.Command(bin, "--listen", sock)
	agent.Stderr = os.Stderr
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if agent.ProcessState == nil {
			agent.Process.Kill()
			agent.Wait()
		}
	})
	var conn net.Conn
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not listen: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	st, err := os.Stat(sock)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600 (%v)", st.Mode().Perm(), err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ag := agentapi.NewAgentClient(client)
	ping, err := ag.Ping(ctx, &agentapi.PingRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var u unix.Utsname
	unix.Uname(&u)
	if ping.AgentVersion != "test-1" || ping.KernelRelease != unix.ByteSliceToString(u.Release[:]) {
		t.Fatalf("ping = %v", ping)
	}

	bundle := filepath.Join(dir, "bundle")
	rootfs := filepath.Join(bundle, "rootfs")
	os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755)
	bb, _ := os.ReadFile("/bin/busybox")
	os.WriteFile(filepath.Join(rootfs, "bin/busybox"), bb, 0o755)
	os.Symlink("busybox", filepath.Join(rootfs, "bin/sh"))
	spec := specs.Spec{Version: specs.Version, Root: &specs.Root{Path: "rootfs"}, Hostname: "vm-ctr",
		Process: &specs.Process{Args: []string{"sh", "-c", "echo $$ $(busybox hostname); exit 5"}, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Linux:   &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: "pid"}, {Type: "mount"}, {Type: "uts"}, {Type: "ipc"}}}}
	b, _ := json.Marshal(spec)
	os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644)

	tasks := taskapi.NewTTRPCTaskClient(client)
	if _, err := tasks.Create(ctx, &taskapi.CreateTaskRequest{ID: "c1", Bundle: bundle, Stdout: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.Start(ctx, &taskapi.StartRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for {
		r, err := ag.ReadStdout(ctx, &agentapi.ReadStreamRequest{ContainerId: "c1"})
		if status.Code(err) == codes.OutOfRange {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out.Write(r.Data)
	}
	if out.String() != "1 vm-ctr\n" {
		t.Fatalf("stdout %q", out.String())
	}
	w, err := tasks.Wait(ctx, &taskapi.WaitRequest{ID: "c1"})
	if err != nil || w.ExitStatus != 5 {
		t.Fatalf("wait = %v, %v; want 5", w, err)
	}
	if _, err := tasks.Delete(ctx, &taskapi.DeleteRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	// Shutdown outside a VM (not PID 1) has no power-off hook: it answers.
	if _, err := tasks.Shutdown(ctx, &taskapi.ShutdownRequest{Now: true}); err != nil {
		t.Fatal(err)
	}
	// SIGTERM stops the development server cleanly and removes its socket.
	client.Close()
	agent.Process.Signal(unix.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- agent.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not exit on SIGTERM")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}
