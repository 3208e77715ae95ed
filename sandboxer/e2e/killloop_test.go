package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/crashpoint"
	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/procmark"
	"github.com/kuasar-go/kuasar/internal/testenv"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// The kill-loop: the sandboxer is SIGKILLed at every named point of a
// pod's life through containerd + crictl (internal/crashpoint), and at
// random moments from outside; after each restart every pod containerd
// knows must be reported alike by containerd and the sandboxer, must be
// removable, and nothing may be left: no process, mount, socket or state
// file. Zero orphans is the bar.

// crashPoints are the named points the sandboxer and its VM backend pass
// through in a pod's life, in order; "#n" is the n-th pass.
var (
	sandboxPoints = []string{
		"sandbox.create.saved",
		"sandbox.start.served",
		"sandbox.backend.started",
		"sandbox.backend.saved",
		"sandbox.start.saved",
	}
	taskPoints = []string{
		"task.Create", "task.Create.done",
		"task.Start", "task.Start.done",
		"task.Exec", "task.Exec.done",
		"task.Kill", "task.Kill.done",
		"task.Delete", "task.Delete.done",
		"sandbox.stop", "sandbox.stop.done",
		"sandbox.shutdown.backend",
	}
)

// podKind is what a kill-loop pod runs.
type podKind struct {
	name  string
	annot map[string]string // pod annotations
	image string
	args  []string // container args
	exec  []string // a command crictl exec runs
}

// killLoopEnv is a containerd + sandboxer under test, with what the loop
// counts.
type killLoopEnv struct {
	t       *testing.T
	e       *testenv.Env
	sbc     api.ControllerClient
	hit     map[string]int // crash point -> times the sandboxer died there
	orphans []string
	// phases sums the time spent in each phase of the iterations.
	phases map[string]time.Duration
	// beforeLife, when set, runs once the sandboxer of the previous
	// life is killed, before the one that is to die starts.
	beforeLife func()
	// afterDeath, when set, runs once the sandboxer died (or the life
	// ended), before it is restarted.
	afterDeath func(what string)
	// settle, when set, runs once the sandboxer is restarted after a
	// life, before the checks: it waits for what the sandboxer does on
	// its own at start.
	settle func(what string)
	// restarted and restartedTicks are when the running sandboxer was
	// started after the last life (wall clock; procmark.Now): the warm
	// pool clones made since are its own, older ones a killed one's.
	restarted      time.Time
	restartedTicks uint64
	// clonesKilled counts the warm pool clone directories a killed
	// sandboxer left (the restarted one must reap them).
	clonesKilled int
}

// TestKillLoopWasm runs 180 Wasm pod lives, each cut by a SIGKILL of the
// sandboxer: 144 at named crash points (every point of sandbox create and
// start with the pod's kind named and not named, of task create, start,
// exec, kill and delete, of stop and shutdown) and 36 at a random moment
// from outside.
func TestKillLoopWasm(t *testing.T) {
	e := testenv.NewEnv(t)
	const ref = "docker.io/kuasar/wasi-killloop:test"
	importWasm(t, e, fixtures.WASI, "wasi.wasm", ref, false)
	kinds := []podKind{
		{name: "wasm-named", annot: map[string]string{"kuasar.io/isolation": "wasm"}, image: ref, args: []string{"sleep", "3600"}, exec: []string{"/wasi.wasm", "args", "exec-ok"}},
		{name: "wasm-routed", image: ref, args: []string{"sleep", "3600"}, exec: []string{"/wasi.wasm", "args", "exec-ok"}},
	}
	points := append(append([]string{}, sandboxPoints...), taskPoints...)
	k := newKillLoop(t, e)
	start := time.Now()
	n := 0
	// Without a named kind, the backend starts at the first task's
	// Create: sandbox.backend.* then come in the middle of task.Create.
	for n < wasmNamed {
		for _, kind := range kinds {
			for _, p := range points {
				if n == wasmNamed {
					break
				}
				k.iteration(kind, n, p, 0)
				n++
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 9))
	for i := range wasmRandom {
		k.iteration(kinds[i%2], n, "", time.Duration(rng.Int64N(int64(1500*time.Millisecond))))
		n++
	}
	k.report(n, time.Since(start), points)
}

// vmTemplatePoints are the phases of a VM template's build: work
// directory made, the builder's QEMU forked (the first vmm.forked while no
// template exists), its agent up, its state saved, its memory file in
// place. The sandboxer builds the template of the default sizes in the
// background as it starts (vmbackend.BuildTemplates), and a VM pod that
// finds none builds it too: each of these lives starts a sandboxer with
// no template, which dies at the point in whichever build reaches it
// first, the start-up one or the pod's.
var vmTemplatePoints = []string{"template.build.workdir", "vmm.forked", "template.build.agent-ready",
	"template.build.saved", "template.build.mem-placed"}

// vmPodPoints are the points of a VM pod's life once its template exists
// (the first life builds it whole, then dies once its QEMU, restored from
// it, runs): started, forked, agent up, sandbox started, task create,
// start, exec, kill and delete, stop and shutdown.
var vmPodPoints = []string{"vm.vmm-started", "vmm.forked", "vm.agent-ready", "sandbox.start.saved",
	"task.Create", "task.Start.done", "task.Exec", "task.Exec.done", "task.Kill", "task.Delete.done",
	"sandbox.stop", "sandbox.stop.done", "sandbox.shutdown.backend"}

// TestKillLoopVM runs 20 VM pod lives under QEMU (TCG here) with VM
// templates and the warm pool (template_pool = 1) on, each cut by a
// SIGKILL of the sandboxer: 5 in the phases of the template's build (the
// builder's QEMU must not outlive it, and no half-built template may ever
// be visible: only complete ones, such as the one the next sandboxer
// builds at its start), 13 at the named points of a pod restored from the
// template, and 2 at a random moment from outside. The idle clones of the
// running sandboxer's pool are its own, not orphans; those of a killed
// one are.
func TestKillLoopVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs")
	}
	testenv.RequireRoot(t)
	e := testenv.NewEnv(t, testenv.WithSandboxerConfig(qemuConfig(t)))
	removeTemplates(t, e)
	const ref = "docker.io/library/busybox-sh:killloop"
	e.ImportImage(testenv.BusyboxImage(t, []string{"/bin/sh", "-c"}), ref)
	kind := podKind{name: "vm", annot: map[string]string{"kuasar.io/isolation": "vm"}, image: ref,
		args: []string{"sleep 600"}, exec: []string{"/bin/echo", "exec-ok"}}
	tb := removeTemplates(t, e)
	k := newKillLoop(t, e)
	// After every restart the sandboxer builds the template if missing:
	// the loop lets that build end before it counts orphans (its work
	// directory and QEMU are the running sandboxer's).
	k.settle = func(what string) { waitTemplateBuilt(t, e, tb, what) }
	start := time.Now()
	n := 0
	for _, p := range vmTemplatePoints {
		// The life starts with no template (the sandboxer was killed
		// first), and once it died no half-built one may be visible.
		k.beforeLife = func() {
			if err := tb.RemoveTemplates(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		k.afterDeath = func(what string) {
			if half := halfBuiltTemplates(e, tb); len(half) != 0 {
				t.Errorf("%s: a half-built template is visible: %v", what, half)
			}
			if tpls := tb.Templates(); len(tpls) != 0 {
				t.Errorf("%s: templates %v after a sandboxer killed while it built the only one", what, tpls)
			}
		}
		k.iteration(kind, n, p, 0)
		n++
	}
	k.beforeLife = nil
	k.afterDeath = func(what string) {
		if half := halfBuiltTemplates(e, tb); len(half) != 0 {
			t.Errorf("%s: a half-built template is visible: %v", what, half)
		}
	}
	for _, p := range vmPodPoints {
		k.iteration(kind, n, p, 0)
		n++
		if tpls := tb.Templates(); len(tpls) != 1 {
			t.Errorf("templates %v after a life of a pod restored from one, want that one", tpls)
		}
	}
	rng := rand.New(rand.NewPCG(2, 7))
	for range vmRandom {
		k.iteration(kind, n, "", time.Second+time.Duration(rng.Int64N(int64(5*time.Second))))
		n++
	}
	k.report(n, time.Since(start), append(append([]string{}, vmTemplatePoints...), vmPodPoints...))
}

// TestKillLoopQuark runs 5 Quark pod lives on the STAND-IN quark
// (quark/internal/standin: Quark cannot be obtained here), each cut by a
// SIGKILL of the sandboxer while it starts the pod: once quark started
// the sandbox process but before its pid was read and recorded
// (quark.started), right after (quark.recorded), once the backend started
// and once it was saved, and once the sandbox was saved ready. The
// sandbox process carries its backend directory as its mark and is
// recorded there before quark runs, so the restarted sandboxer kills it
// however far the start got. (The lives end before a container runs: the
// stand-in's runc containers, unlike Quark's, outlive its sandbox
// process.)
func TestKillLoopQuark(t *testing.T) {
	if testing.Short() {
		t.Skip("runs containerd, the sandboxer and runc")
	}
	testenv.RequireRoot(t)
	e := testenv.NewEnv(t, testenv.WithSandboxerConfig(standinQuark(t)))
	const ref = "docker.io/library/busybox-sh:killloop-quark"
	e.ImportImage(testenv.BusyboxImage(t, []string{"/bin/sh", "-c"}), ref)
	kind := podKind{name: "quark", annot: map[string]string{"kuasar.io/isolation": "quark"}, image: ref,
		args: []string{"sleep 600"}, exec: []string{"/bin/echo", "exec-ok"}}
	points := []string{"quark.started", "quark.recorded", "sandbox.backend.started", "sandbox.backend.saved", "sandbox.start.saved"}
	k := newKillLoop(t, e)
	start := time.Now()
	for n, p := range points {
		k.iteration(kind, n, p, 0)
	}
	k.report(len(points), time.Since(start), points)
}

// Iterations of the Wasm loop: at named points, and killed from outside;
// and of the VM loop killed from outside. With the VM loop's 18 named
// points, 200 lives in all.
var wasmNamed, wasmRandom, vmRandom = 144, 36, 2

// halfBuiltTemplates lists the directories in e's VM template directory
// that a sandboxer would look at as templates (not a build's hidden work
// directories, .build-* and .tmp-*, which findOrphans counts once no build
// runs; not the keys' lock files) and that are not complete, usable
// templates as the VM backend tb sees them.
func halfBuiltTemplates(e *testenv.Env, tb *vmbackend.Backend) []string {
	usable := map[string]bool{}
	for _, d := range tb.Templates() {
		usable[filepath.Base(d)] = true
	}
	var out []string
	ents, _ := os.ReadDir(filepath.Join(e.SandboxerState, "vm-templates"))
	for _, en := range ents {
		if en.IsDir() && !strings.HasPrefix(en.Name(), ".") && !usable[en.Name()] {
			out = append(out, en.Name())
		}
	}
	return out
}

// templateBuildTimeout bounds the wait for the template a restarted
// sandboxer builds at its start (a cold boot and a save under TCG, on a
// loaded machine).
const templateBuildTimeout = 3 * time.Minute

// waitTemplateBuilt polls, under one deadline, until e's sandboxer has
// its complete template of the default sizes and no build runs (no work
// files left in the template directory).
func waitTemplateBuilt(t *testing.T, e *testenv.Env, tb *vmbackend.Backend, what string) {
	t.Helper()
	for deadline := time.Now().Add(templateBuildTimeout); ; time.Sleep(200 * time.Millisecond) {
		building := false
		ents, _ := os.ReadDir(filepath.Join(e.SandboxerState, "vm-templates"))
		for _, en := range ents {
			building = building || strings.HasPrefix(en.Name(), ".build-") || strings.HasPrefix(en.Name(), ".tmp-")
		}
		if len(tb.Templates()) == 1 && !building {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: the restarted sandboxer did not build its VM template within %v (templates %v, build running %v)\n%s", what, templateBuildTimeout, tb.Templates(), building, tail(e.Sandboxer.Output(), 20))
			return
		}
	}
}

func newKillLoop(t *testing.T, e *testenv.Env) *killLoopEnv {
	return &killLoopEnv{t: t, e: e, sbc: sandboxerClient(t, e), hit: map[string]int{}, phases: map[string]time.Duration{}}
}

// report logs the figures and fails for every crash point never reached
// and for the orphans found.
func (k *killLoopEnv) report(n int, took time.Duration, points []string) {
	k.t.Logf("kill-loop: %d iterations in %v (phases %v); deaths at named points %v; warm pool clones a killed sandboxer left %d; orphans %d", n, took.Round(time.Second), k.phases, k.hit, k.clonesKilled, len(k.orphans))
	for _, p := range points {
		if k.hit[p] == 0 {
			k.t.Errorf("crash point %s was never reached: the loop does not test it", p)
		}
	}
	if len(k.orphans) > 0 {
		k.t.Errorf("%d orphans after a SIGKILL of the sandboxer:\n%s", len(k.orphans), strings.Join(k.orphans, "\n"))
	}
}

// iteration lives one pod: the sandboxer is restarted to die at point (or,
// with point "", killed from outside after delay), the pod's life is run
// through crictl until a step fails, the sandboxer is restarted, then
// containerd and the sandboxer must agree, everything must be removable and
// nothing may be left.
func (k *killLoopEnv) iteration(kind podKind, n int, point string, delay time.Duration) {
	t, e := k.t, k.e
	t.Helper()
	t0 := time.Now()
	phase := func(name string) {
		k.phases[name] += time.Since(t0).Round(time.Millisecond)
		t0 = time.Now()
	}
	e.Sandboxer.Kill9()
	e.SandboxerEnv = nil
	if k.beforeLife != nil {
		k.beforeLife()
	}
	if point != "" {
		e.SandboxerEnv = []string{crashpoint.Env + "=" + point}
	}
	e.StartSandboxer()
	victim := e.Sandboxer
	var timer *time.Timer
	killed := make(chan struct{})
	if point == "" {
		timer = time.AfterFunc(delay, func() { victim.Kill9(); close(killed) })
	}
	name := fmt.Sprintf("kl%d", n)
	phase("start")
	step, err := k.live(kind, name)
	var died bool
	if timer != nil && !timer.Stop() {
		<-killed    // the kill runs: let it finish before touching the process
		died = true // and reaped it: its pid may name another process now
	} else {
		died = exited(victim.Pid(), 5*time.Second)
	}
	switch {
	case died && point != "":
		k.hit[point]++
	case !died && point != "":
		t.Logf("iteration %d: point %s not reached (%s finished)", n, point, kind.name)
	}
	if err != nil && !died {
		t.Errorf("iteration %d (%s, %s): step %s failed with the sandboxer alive: %v\n%s", n, kind.name, point, step, err, tail(e.Sandboxer.Output(), 20))
	}
	e.Sandboxer.Kill9()
	if ents, err := os.ReadDir(filepath.Join(e.SandboxerState, "b")); err == nil {
		for _, en := range ents {
			if strings.HasPrefix(en.Name(), "p-") {
				k.clonesKilled++
			}
		}
	}
	what := fmt.Sprintf("iteration %d (%s, killed at %q after step %s, delay %v)", n, kind.name, point, step, delay)
	if k.afterDeath != nil {
		k.afterDeath(what)
	}
	e.SandboxerEnv = nil
	k.restarted, k.restartedTicks = time.Now(), procmark.Now()
	e.StartSandboxer()
	phase("live")
	if k.settle != nil {
		k.settle(what)
		phase("settle")
	}
	k.agree(what)
	phase("agree")
	k.removeAll(what)
	phase("remove")
	k.noOrphans(what)
	phase("orphans")
}

// channelNotReady reports whether err is containerd's gRPC channel to the
// sandboxer failing fast while it reconnects after a restart: refused while
// nothing listens yet, or reset when the connection it had started was in the
// killed sandboxer's backlog ("error reading server preface"). Both are the
// channel's last connection error, returned as Unavailable before the call is
// sent, so the sandboxer never saw the request.
func channelNotReady(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "connection refused") ||
		strings.Contains(msg, "error reading server preface")
}

// live runs a pod's life through crictl until a step fails; it returns the
// step it stopped at.
func (k *killLoopEnv) live(kind podKind, name string) (string, error) {
	e := k.e
	podCfg := podJSON(k.t, e, name, kind.annot)
	ctrCfg := ctrJSON(k.t, e, name, kind.image, kind.args, false)
	// Right after a restart containerd's gRPC channel to the sandboxer
	// may still be in its reconnect back-off and fail at once with
	// "connection refused": kubelet retries, so does this, within a
	// deadline.
	var pod string
	var err error
	for deadline := time.Now().Add(reconnectTimeout); ; {
		pod, err = e.CrictlErr("runp", "--runtime", "kuasar", podCfg)
		if err == nil || !channelNotReady(err) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return "runp", err
	}
	ctr, err := e.CrictlErr("create", pod, ctrCfg, podCfg)
	if err != nil {
		return "create", err
	}
	if _, err := e.CrictlErr("start", ctr); err != nil {
		return "start", err
	}
	if out, err := e.CrictlErr(append([]string{"exec", ctr}, kind.exec...)...); err != nil {
		return "exec", err
	} else if !strings.Contains(out, "exec-ok") {
		return "exec", fmt.Errorf("exec printed %q, want exec-ok", out)
	}
	if _, err := e.CrictlErr("stop", "--timeout", "1", ctr); err != nil {
		return "stop", err
	}
	if _, err := e.CrictlErr("rm", ctr); err != nil {
		return "rm", err
	}
	if _, err := e.CrictlErr("stopp", pod); err != nil {
		return "stopp", err
	}
	if _, err := e.CrictlErr("rmp", pod); err != nil {
		return "rmp", err
	}
	return "done", nil
}

// reconnectTimeout bounds the retries of a runp refused while containerd
// reconnects to the restarted sandboxer.
const reconnectTimeout = 10 * time.Second

// exited reports whether process pid has exited (it may not be reaped
// yet) within timeout, polling a pidfd: readable once it has.
func exited(pid int, timeout time.Duration) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return true
	}
	defer unix.Close(fd)
	n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(timeout/time.Millisecond))
	return err == nil && n > 0
}

type criPod struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

type criCtr struct {
	ID           string `json:"id"`
	PodSandboxID string `json:"podSandboxId"`
	State        string `json:"state"`
}

func (k *killLoopEnv) criState() ([]criPod, []criCtr, error) {
	out, err := k.e.CrictlErr("pods", "-o", "json")
	if err != nil {
		return nil, nil, err
	}
	var pods struct{ Items []criPod }
	if err := json.Unmarshal([]byte(out), &pods); err != nil {
		return nil, nil, fmt.Errorf("crictl pods: %v: %s", err, out)
	}
	out, err = k.e.CrictlErr("ps", "-a", "-o", "json")
	if err != nil {
		return nil, nil, err
	}
	var ctrs struct{ Containers []criCtr }
	if err := json.Unmarshal([]byte(out), &ctrs); err != nil {
		return nil, nil, fmt.Errorf("crictl ps: %v: %s", err, out)
	}
	return pods.Items, ctrs.Containers, nil
}

// agreeTimeout bounds how long containerd may take to learn what the
// restarted sandboxer reports (it re-opens Wait, and retries the exits of
// the tasks it lost with back-off).
const agreeTimeout = 60 * time.Second

// agree polls, under one deadline, until containerd and the sandboxer
// report every pod containerd knows alike: a pod containerd calls ready
// runs in the sandboxer and the other way round, and the tasks the
// sandboxer runs are the containers containerd calls running (Status
// counts what really runs; nothing runs that containerd counts exited).
func (k *killLoopEnv) agree(what string) {
	deadline := time.Now().Add(agreeTimeout)
	var last error
	for {
		last = k.disagreement()
		if last == nil {
			return
		}
		if time.Now().After(deadline) {
			k.t.Errorf("%s: containerd and the sandboxer still disagree after %v: %v\nsandboxer:\n%s", what, agreeTimeout, last, tail(k.e.Sandboxer.Output(), 30))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (k *killLoopEnv) disagreement() error {
	pods, ctrs, err := k.criState()
	if err != nil {
		return err
	}
	for _, p := range pods {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := k.sbc.Status(ctx, &api.ControllerStatusRequest{SandboxID: p.ID, Verbose: true})
		cancel()
		if errdefs.IsNotFound(errgrpc.ToNative(err)) {
			if p.State == "SANDBOX_READY" {
				return fmt.Errorf("pod %s: containerd says ready, the sandboxer does not know it", p.ID)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("pod %s: sandboxer status: %w", p.ID, err)
		}
		if ready := st.State == "SANDBOX_READY"; ready != (p.State == "SANDBOX_READY") {
			return fmt.Errorf("pod %s: containerd says %s, the sandboxer %s", p.ID, p.State, st.State)
		}
		running, created := 0, 0
		for _, c := range ctrs {
			if c.PodSandboxID != p.ID {
				continue
			}
			switch c.State {
			case "CONTAINER_RUNNING":
				running++
			case "CONTAINER_CREATED":
				created++
			}
		}
		tasks, _ := strconv.Atoi(st.Info["tasks"])
		if tasks < running || tasks > running+created {
			return fmt.Errorf("pod %s: the sandboxer runs %d tasks, containerd counts %d containers running and %d created", p.ID, tasks, running, created)
		}
	}
	return nil
}

// removeTimeout bounds the removal of one container or pod, retried while
// containerd is still handling the exits of the tasks it lost.
const removeTimeout = 60 * time.Second

// removeAll removes every container and pod containerd knows; each must
// go within removeTimeout.
func (k *killLoopEnv) removeAll(what string) {
	pods, ctrs, err := k.criState()
	if err != nil {
		k.t.Errorf("%s: %v", what, err)
		return
	}
	for _, c := range ctrs {
		k.retry(what, "rm -f "+c.ID, "rm", "-f", c.ID)
	}
	for _, p := range pods {
		k.retry(what, "stopp "+p.ID, "stopp", p.ID)
		k.retry(what, "rmp "+p.ID, "rmp", p.ID)
	}
	if pods, ctrs, err := k.criState(); err != nil || len(pods)+len(ctrs) != 0 {
		k.t.Errorf("%s: containerd still knows pods %v and containers %v after removing them (%v)", what, pods, ctrs, err)
	}
}

func (k *killLoopEnv) retry(what, op string, args ...string) {
	deadline := time.Now().Add(removeTimeout)
	for {
		_, err := k.e.CrictlErr(args...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			k.t.Errorf("%s: crictl %s: %v\nsandboxer:\n%s", what, op, err, tail(k.e.Sandboxer.Output(), 30))
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// orphanTimeout bounds the wait for the sandboxer's own clean-up after a
// restart (it runs once every record is re-attached).
const orphanTimeout = 30 * time.Second

// noOrphans checks that nothing of any pod is left once containerd has
// removed them all: no sandbox record, task socket or backend directory, no
// process that carries a sandbox's mark or names the state directory, no
// mount under the state or test directory. It polls under one deadline;
// what is still there then is counted, reported, and cleaned up so that the
// next iteration starts clean.
func (k *killLoopEnv) noOrphans(what string) {
	deadline := time.Now().Add(orphanTimeout)
	for {
		found := k.findOrphans()
		if len(found) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, f := range found {
				k.t.Logf("%s: orphan: %s", what, f.what)
				k.orphans = append(k.orphans, what+": "+f.what)
				f.clean()
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type orphan struct {
	what  string
	clean func()
}

func (k *killLoopEnv) findOrphans() []orphan {
	e := k.e
	var found []orphan
	h := sha256.Sum256([]byte(filepath.Join(e.SandboxerState, "vm-templates")))
	tplMem := "kuasar-vm-templates/" + hex.EncodeToString(h[:8])
	// The idle clones of the running sandboxer's warm pool are its own.
	clones := k.currentClones()
	for _, sub := range []string{"sandboxes", "s", "b"} {
		ents, _ := os.ReadDir(filepath.Join(e.SandboxerState, sub))
		for _, en := range ents {
			p := filepath.Join(e.SandboxerState, sub, en.Name())
			if sub == "b" && clones[en.Name()] {
				continue
			}
			found = append(found, orphan{"file " + p, func() { _ = os.RemoveAll(p) }})
		}
	}
	// A template build's leftovers: its work directory, its half-built
	// template, its memory file (built templates stay: they are a cache).
	tplDirs := []string{filepath.Join(e.SandboxerState, "vm-templates"), filepath.Join("/dev/shm", tplMem)}
	for _, d := range tplDirs {
		ents, _ := os.ReadDir(d)
		for _, en := range ents {
			if strings.HasPrefix(en.Name(), ".build-") || strings.HasPrefix(en.Name(), ".tmp-") {
				p := filepath.Join(d, en.Name())
				found = append(found, orphan{"template build file " + p, func() { _ = os.RemoveAll(p) }})
			}
		}
	}
	procs, _ := procmark.Scan(e.SandboxerState)
	seen := map[int]bool{}
	for _, p := range procs {
		seen[p.Pid] = true
		if clones[cloneOf(e, p.Owner)] && p.StartTime > k.restartedTicks {
			continue
		}
		found = append(found, orphan{fmt.Sprintf("process %d (%s)", p.Pid, cmdline(p.Pid)), func() { _ = procmark.Kill(p) }})
	}
	// Unmarked processes too (the code before marks existed): any process
	// but the sandboxer whose command line names the state directory, or
	// the memory directory of its VM templates (before, a template being
	// built ran in a directory of its own under /tmp).
	ents, _ := os.ReadDir("/proc")
	for _, en := range ents {
		pid, err := strconv.Atoi(en.Name())
		if err != nil || seen[pid] || pid == e.Sandboxer.Pid() {
			continue
		}
		b, _ := os.ReadFile("/proc/" + en.Name() + "/cmdline")
		if full := string(b); strings.Contains(full, e.SandboxerState+"/") || strings.Contains(full, tplMem) {
			cl := cmdline(pid)
			found = append(found, orphan{fmt.Sprintf("process %d (%s)", pid, cl), func() { _ = unix.Kill(pid, unix.SIGKILL) }})
		}
	}
	for _, m := range append(testenv.MountsUnder(e.Dir), testenv.MountsUnder(e.SandboxerState)...) {
		if rest, ok := strings.CutPrefix(m, filepath.Join(e.SandboxerState, "b")+"/"); ok {
			if first, _, _ := strings.Cut(rest, "/"); clones[first] {
				continue
			}
		}
		found = append(found, orphan{"mount " + m, func() { _ = unix.Unmount(m, unix.MNT_DETACH) }})
	}
	return found
}

// currentClones names the warm pool clone directories (<state>/b/p-*)
// of the sandboxer started after the last life: its QEMU, as recorded in
// the clone's vm/vmm.proc, started after it; or, while the clone is being
// made (no QEMU recorded yet), the directory was made after it. A clone
// of a killed sandboxer is neither, and its restarted successor must reap
// it.
func (k *killLoopEnv) currentClones() map[string]bool {
	out := map[string]bool{}
	b := filepath.Join(k.e.SandboxerState, "b")
	ents, _ := os.ReadDir(b)
	for _, en := range ents {
		if !strings.HasPrefix(en.Name(), "p-") {
			continue
		}
		dir := filepath.Join(b, en.Name())
		if r, err := procmark.Read(filepath.Join(dir, "vm", "vmm"+procmark.RecordExt)); err == nil && r.Pid != 0 {
			out[en.Name()] = r.StartTime > k.restartedTicks && procmark.Alive(r.Proc())
			continue
		}
		var st unix.Stat_t
		if unix.Stat(dir, &st) == nil && !time.Unix(st.Ctim.Unix()).Before(k.restarted) {
			out[en.Name()] = true
		}
	}
	return out
}

// cloneOf is the name of the directory in <state>/b a process's mark
// names ("" when it is not there).
func cloneOf(e *testenv.Env, owner string) string {
	rest, ok := strings.CutPrefix(owner, filepath.Join(e.SandboxerState, "b")+"/")
	if !ok {
		return ""
	}
	first, _, _ := strings.Cut(rest, "/")
	return first
}

func cmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	s := strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}
