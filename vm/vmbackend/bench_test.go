package vmbackend_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/guest"
	"github.com/kuasar-go/kuasar/vm/internal/qemu"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// BenchmarkSandboxStart measures create → container running through the
// backend, broken down: VMM started (QMP up), agent ready (first Ping:
// kernel boot + agent init), sandbox set up (hostname, 9p mount), and
// container started (Create + Start after set-up). Run with
// -benchtime=5x: each iteration boots a VM (about 3 s under TCG).
func BenchmarkSandboxStart(b *testing.B) {
	testenv.RequireRoot(b)
	a := agentGuest(b)
	ctx := context.Background()
	be := qemuBackend(b, ctx, qemuConfig(b, a))
	root := busyboxRootfs(b)
	bd := bundle(b, root, "/bin/sleep", "30")
	var vmmStart, agentReady, setup, ctrStart, total time.Duration
	var rss uint64
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		bi, _ := startSandbox(b, ctx, be, backend.Sandbox{ID: "bench"})
		t1 := time.Now()
		startContainer(b, ctx, bi, "c", bd)
		t2 := time.Now()
		tm := bi.(*vmbackend.Instance).Timings()
		vmmStart += tm.VMMStarted
		agentReady += tm.AgentReady
		setup += tm.SandboxReady - tm.AgentReady
		ctrStart += t2.Sub(t1)
		total += t2.Sub(t0)
		rss += finish(b, ctx, bi, true)
	}
	n := float64(b.N)
	b.ReportMetric(float64(vmmStart.Milliseconds())/n, "vmm-start-ms")
	b.ReportMetric(float64((agentReady-vmmStart).Milliseconds())/n, "kernel+agent-boot-ms")
	b.ReportMetric(float64(agentReady.Milliseconds())/n, "agent-ready-ms")
	b.ReportMetric(float64(setup.Milliseconds())/n, "setup-ms")
	b.ReportMetric(float64(ctrStart.Milliseconds())/n, "ready-to-container-started-ms")
	b.ReportMetric(float64(total.Milliseconds())/n, "create-to-running-ms")
	b.ReportMetric(float64(rss>>20)/n, "vmm-rss-MiB")
}

// BenchmarkBareQEMU boots the same kernel and initramfs with the same QEMU
// command line, started by hand (no driver, no QMP, no health checks), to
// the same point: the agent's first Ping answer.
func BenchmarkBareQEMU(b *testing.B) {
	testenv.RequireRoot(b)
	a := agentGuest(b)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		total += bareBoot(b, a)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "agent-ready-ms")
}

// BenchmarkOverhead alternates a bare QEMU boot and a sandbox start per
// iteration (so both see the same machine load) and reports the
// sandboxer's overhead to agent-ready in percent (target: at most 10).
func BenchmarkOverhead(b *testing.B) {
	testenv.RequireRoot(b)
	a := agentGuest(b)
	ctx := context.Background()
	be := qemuBackend(b, ctx, qemuConfig(b, a))
	var bare, ours time.Duration
	for i := 0; i < b.N; i++ {
		bare += bareBoot(b, a)
		// AgentReady is measured from the VMM launch inside Start.
		bi, _ := startSandbox(b, ctx, be, backend.Sandbox{ID: "overhead"})
		ours += bi.(*vmbackend.Instance).Timings().AgentReady
		finish(b, ctx, bi, false)
	}
	n := float64(b.N)
	b.ReportMetric(float64(bare.Milliseconds())/n, "bare-agent-ready-ms")
	b.ReportMetric(float64(ours.Milliseconds())/n, "sandbox-agent-ready-ms")
	b.ReportMetric(100*(float64(ours)-float64(bare))/float64(bare), "overhead-%")
}

// finish ends one iteration: it reads bi's VMM RSS when rss is set
// (inside the timer, as the figures are taken), then shuts bi down
// outside the timer.
func finish(b *testing.B, ctx context.Context, bi backend.Instance, rss bool) uint64 {
	var n uint64
	if rss {
		if m, err := bi.Metrics(ctx); err == nil {
			n = m.MemoryBytes
		}
	}
	b.StopTimer()
	bi.Shutdown(ctx)
	b.StartTimer()
	return n
}

func bareBoot(b *testing.B, a guest.Artifacts) time.Duration {
	state := b.TempDir()
	shared := filepath.Join(state, "shared")
	os.MkdirAll(shared, 0o700)
	v, err := qemu.New(vm.Spec{ID: "bare", StateDir: state, SharedDir: shared, Config: qemuConfig(b, a)})
	if err != nil {
		b.Fatal(err)
	}
	args := v.Args(qemu.AccelTCG)
	t0 := time.Now()
	l, err := net.Listen("unix", filepath.Join(state, qemu.AgentSocketName))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	cmd := exec.Command(qemuConfig(b, a).Path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	conn, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	cl := ttrpc.NewClient(conn)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := agentapi.NewAgentClient(cl).Ping(ctx, &agentapi.PingRequest{}); err != nil {
		b.Fatal(err)
	}
	return time.Since(t0)
}

// BenchmarkSandboxStartMinimalKernel is BenchmarkSandboxStart with the
// minimal kernel (everything built in, no modules, microvm without ACPI).
// The first run builds that kernel: about 10 minutes on 2 cores.
func BenchmarkSandboxStartMinimalKernel(b *testing.B) {
	testenv.RequireRoot(b)
	a := testenv.Build(b, guest.Options{MinimalKernel: true})
	cfg := qemuConfig(b, a)
	cfg.MachineOptions = "acpi=off"
	cfg.KernelParams = []string{"reboot=t"}
	ctx := context.Background()
	be := qemuBackend(b, ctx, cfg)
	bd := bundle(b, busyboxRootfs(b), "/bin/sleep", "30")
	var agentReady, ctrStart time.Duration
	var rss uint64
	for i := 0; i < b.N; i++ {
		bi, _ := startSandbox(b, ctx, be, backend.Sandbox{ID: "bench-min"})
		t1 := time.Now()
		startContainer(b, ctx, bi, "c", bd)
		ctrStart += time.Since(t1)
		agentReady += bi.(*vmbackend.Instance).Timings().AgentReady
		rss += finish(b, ctx, bi, true)
	}
	n := float64(b.N)
	b.ReportMetric(float64(agentReady.Milliseconds())/n, "agent-ready-ms")
	b.ReportMetric(float64(ctrStart.Milliseconds())/n, "ready-to-container-started-ms")
	b.ReportMetric(float64(rss>>20)/n, "vmm-rss-MiB")
}
