package service

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/task/agent/internal/guestinit"
)

func TestPing(t *testing.T) {
	e := newEnv(t)
	r, err := e.agent.Ping(ctxT(t), &agentapi.PingRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	if r.KernelRelease != unix.ByteSliceToString(u.Release[:]) || r.AgentVersion != "test" {
		t.Fatalf("ping = %v", r)
	}
}

func TestSetupSandbox(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	var gotHost string
	var gotClock time.Time
	a := NewAgentService(New(guestinit.GlobalReaper(context.Background())),
		WithResolvConf(filepath.Join(dir, "run/kuasar/resolv.conf"), filepath.Join(dir, "etc/resolv.conf")),
		WithPodFilesDir(filepath.Join(dir, "run/kuasar")),
		// Hostname and clock are machine-wide: record them instead. The
		// mount is real.
		WithSystemHooks(func(h string) error { gotHost = h; return nil }, func(c time.Time) error { gotClock = c; return nil }, nil))
	target := filepath.Join(dir, "run/kuasar/shared")
	clock := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	_, err := a.SetupSandbox(ctxT(t), &agentapi.SetupSandboxRequest{
		Hostname:      "pod-a",
		DnsServers:    []string{"10.0.0.10", "8.8.8.8"},
		DnsSearches:   []string{"default.svc.cluster.local", "svc.cluster.local"},
		Mounts:        []*agentapi.Mount{{Source: "kuasar", Fstype: "tmpfs", Target: target, Options: []string{"size=1m", "nodev"}}},
		ClockUnixNano: clock.UnixNano(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
	if gotHost != "pod-a" || !gotClock.Equal(clock) {
		t.Fatalf("hostname %q clock %v", gotHost, gotClock)
	}
	want := "nameserver 10.0.0.10\nnameserver 8.8.8.8\nsearch default.svc.cluster.local svc.cluster.local\n"
	for _, p := range []string{"run/kuasar/resolv.conf", "etc/resolv.conf"} {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || string(b) != want {
			t.Fatalf("%s = %q, %v", p, b, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "run/kuasar/hostname")); string(b) != "pod-a\n" {
		t.Fatalf("hostname file %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "run/kuasar/hosts")); !strings.Contains(string(b), "127.0.1.1\tpod-a\n") {
		t.Fatalf("hosts file %q", b)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Fatalf("%s is not a tmpfs mount: %v (type %x)", target, err, st.Type)
	}

	for name, req := range map[string]*agentapi.SetupSandboxRequest{
		"relative target": {Mounts: []*agentapi.Mount{{Source: "x", Fstype: "tmpfs", Target: "rel"}}},
		"root target":     {Mounts: []*agentapi.Mount{{Source: "x", Fstype: "tmpfs", Target: "/"}}},
		"no fstype":       {Mounts: []*agentapi.Mount{{Source: "x", Target: filepath.Join(dir, "m")}}},
		"bad dns server":  {DnsServers: []string{"1.1.1.1 evil"}},
		"long hostname":   {Hostname: strings.Repeat("h", 65)},
		"unknown fs":      {Mounts: []*agentapi.Mount{{Source: "x", Fstype: "nosuchfs", Target: filepath.Join(dir, "n")}}},
	} {
		_, err := a.SetupSandbox(ctxT(t), req)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if name != "unknown fs" && !isKind(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}
