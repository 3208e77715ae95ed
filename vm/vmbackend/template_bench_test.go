package vmbackend_test

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/qemu"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// pssBytes is the proportional set size of pid (smaps_rollup).
func pssBytes(tb testing.TB, pid int) uint64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == "Pss" {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	tb.Fatalf("no Pss in smaps_rollup of %d", pid)
	return 0
}

// BenchmarkTemplateStart measures create → container running, cold boot,
// from a template and from the warm pool side by side in one run (the
// template is built before the timer starts), and each VMM's PSS with
// three such sandboxes at once (what a template shares shows only across
// sandboxes): idle (set up, no container) and with a sleeping container
// each. The pool row starts one sandbox per iteration, once the pool
// holds its clone again (timer stopped), and reports the idle clone's
// PSS. Run with -benchtime=5x.
func BenchmarkTemplateStart(b *testing.B) {
	a := agentGuest(b)
	ctx := context.Background()
	cfg := qemuConfig(b, a)
	tpl := templateBackend(b, ctx, cfg)
	defer benchPool(b, ctx, cfg)
	warm, _ := startSandbox(b, ctx, tpl, backend.Sandbox{ID: "bench-warm"})
	warm.Shutdown(ctx)
	bd := bundle(b, busyboxRootfs(b), "/bin/sleep", "60")
	for _, mode := range []struct {
		name string
		be   *vmbackend.Backend
	}{{"cold", qemuBackend(b, ctx, cfg)}, {"template", tpl}} {
		b.Run(mode.name, func(b *testing.B) {
			var total time.Duration
			var idle, busy uint64
			for i := 0; i < b.N; i++ {
				var live []backend.Instance
				var first time.Duration
				for j := 0; j < 3; j++ {
					t0 := time.Now()
					bi, _ := startSandbox(b, ctx, mode.be, backend.Sandbox{ID: "bench-" + mode.name})
					if j == 0 {
						first = time.Since(t0)
					}
					if got := bi.(*vmbackend.Instance).FromTemplate(); got != (mode.name == "template") {
						b.Fatalf("from template: %v", got)
					}
					live = append(live, bi)
				}
				b.StopTimer()
				for _, bi := range live {
					idle += pssBytes(b, int(bi.Pid()))
				}
				b.StartTimer()
				for j, bi := range live {
					t1 := time.Now()
					startContainer(b, ctx, bi, "c", bd)
					if j == 0 {
						total += first + time.Since(t1)
					}
				}
				b.StopTimer()
				for _, bi := range live {
					busy += pssBytes(b, int(bi.Pid()))
				}
				for _, bi := range live {
					bi.Shutdown(ctx)
				}
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(float64(total.Milliseconds())/n, "create-to-running-ms")
			b.ReportMetric(float64(idle>>20)/(3*n), "vmm-pss-idle-MiB")
			b.ReportMetric(float64(busy>>20)/(3*n), "vmm-pss-with-container-MiB")
		})
	}
}

// benchPool runs the "pool" row of BenchmarkTemplateStart.
func benchPool(b *testing.B, ctx context.Context, cfg vm.Config) {
	pb := poolBackend(b, ctx, cfg, 1)
	bd := bundle(b, busyboxRootfs(b), "/bin/sleep", "60")
	// The pool is per parent directory: every sandbox here in one.
	parent := b.TempDir()
	start := func(b *testing.B, id string) backend.Instance {
		dir, err := os.MkdirTemp(parent, "sb-")
		if err != nil {
			b.Fatal(err)
		}
		bi, err := pb.Start(ctx, backend.Sandbox{ID: id, StateDir: dir})
		if err != nil {
			b.Fatal(err)
		}
		return bi
	}
	start(b, "bench-pool-warm").Shutdown(ctx)
	b.Run("pool", func(b *testing.B) {
		var total time.Duration
		var idle uint64
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			waitIdle(b, wctx, pb, 1)
			cancel()
			pids, _ := vmbackend.PoolClones(pb)
			idle += pssBytes(b, pids[0])
			b.StartTimer()
			t0 := time.Now()
			bi := start(b, "bench-pool")
			startContainer(b, ctx, bi, "c", bd)
			total += time.Since(t0)
			b.StopTimer()
			bi.Shutdown(ctx)
			if !bi.(*vmbackend.Instance).FromPool() {
				b.Fatal("not from the pool")
			}
			b.StartTimer()
		}
		n := float64(b.N)
		b.ReportMetric(float64(total.Milliseconds())/n, "create-to-running-ms")
		b.ReportMetric(float64(idle>>20)/n, "idle-clone-pss-MiB")
	})
}

// BenchmarkTemplateOverhead alternates, per iteration, a restore of one
// template by QEMU started by hand (no jail, no health probe: QMP and the
// migration socket driven directly) and a sandbox start from it, both to
// the agent's first Ping answer, and reports the sandboxer's overhead in
// percent (target: at most 10).
func BenchmarkTemplateOverhead(b *testing.B) {
	a := agentGuest(b)
	ctx := context.Background()
	cfg := qemuConfig(b, a)
	be := templateBackend(b, ctx, cfg)
	warm, _ := startSandbox(b, ctx, be, backend.Sandbox{ID: "bench-warm"})
	warm.Shutdown(ctx)
	var bare, ours time.Duration
	for i := 0; i < b.N; i++ {
		bare += bareRestore(b, cfg, be)
		bi, _ := startSandbox(b, ctx, be, backend.Sandbox{ID: "overhead"})
		ours += bi.(*vmbackend.Instance).Timings().AgentReady
		b.StopTimer()
		bi.Shutdown(ctx)
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(bare.Milliseconds())/n, "bare-restore-agent-ready-ms")
	b.ReportMetric(float64(ours.Milliseconds())/n, "sandbox-agent-ready-ms")
	b.ReportMetric(100*(float64(ours)-float64(bare))/float64(bare), "overhead-%")
}

// bareRestore restores be's template with QEMU started by hand and
// returns the time from launch to the agent's first Ping answer.
func bareRestore(b *testing.B, cfg vm.Config, be *vmbackend.Backend) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	state, err := os.MkdirTemp("", "kuasar-bare-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(state)
	shared := filepath.Join(state, "shared")
	os.MkdirAll(shared, 0o700)
	v, err := qemu.New(vm.Spec{ID: "bare", StateDir: state, SharedDir: shared, Config: cfg})
	if err != nil {
		b.Fatal(err)
	}
	key, err := v.TemplateKey(ctx)
	if err != nil {
		b.Fatal(err)
	}
	t, err := vmbackend.TemplateStore(be).Lookup(key)
	if err != nil {
		b.Fatal(err)
	}
	defer t.Close()
	args := v.RestoreArgs(qemu.AccelTCG, t)
	t0 := time.Now()
	l, err := net.Listen("unix", filepath.Join(state, qemu.AgentSocketName))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	cmd := exec.Command(cfg.Path, args...)
	cmd.ExtraFiles = []*os.File{t.Memory()} // the sealed memory, as the driver passes it
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var q *qemu.QMP
	for q == nil {
		if q, err = qemu.DialQMP(ctx, filepath.Join(state, qemu.QMPSocketName)); err != nil && ctx.Err() != nil {
			b.Fatal(err)
		}
	}
	defer q.Close()
	exec1 := func(cmd string, args any) {
		if _, err := q.Execute(ctx, cmd, args); err != nil {
			b.Fatal(err)
		}
	}
	exec1("migrate-set-capabilities", map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}})
	sock := filepath.Join(state, qemu.MigrateSocketName)
	exec1("migrate-incoming", map[string]any{"uri": "unix:" + sock})
	st, err := os.ReadFile(t.StatePath)
	if err != nil {
		b.Fatal(err)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	c.Write(st)
	c.Close()
	for {
		s, err := q.QueryStatus(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if s.Status == "paused" || s.Status == "postmigrate" {
			exec1("cont", nil)
			break
		}
	}
	conn, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	cl := ttrpc.NewClient(conn)
	defer cl.Close()
	if _, err := agentapi.NewAgentClient(cl).Ping(ctx, &agentapi.PingRequest{}); err != nil {
		b.Fatal(err)
	}
	return time.Since(t0)
}
