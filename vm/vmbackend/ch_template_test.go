package vmbackend_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/testenv/chfake"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// Cloud Hypervisor sandboxes from VM templates, through the backend.
// Cloud Hypervisor cannot run on the machine this was written on: these
// tests run this test binary, re-executed, as a fake Cloud Hypervisor
// (internal/testenv/chfake) that validates every API request against
// Cloud Hypervisor's OpenAPI description and snapshots and restores as
// its code does, with a fake guest agent behind its hybrid vsock. They
// verify the backend against that specification and that fake only.

// TestMain serves as the fake Cloud Hypervisor (and virtiofsd) when the
// test binary is re-executed as one.
func TestMain(m *testing.M) { chfake.Main(m) }

// chBackend is a VM backend whose default hypervisor is the fake Cloud
// Hypervisor (virtio-fs, with the fake virtiofsd), keeping templates in
// a fresh directory; edit changes its config.
func chBackend(t *testing.T, ctx context.Context, edit func(*vm.Config)) *vmbackend.Backend {
	t.Helper()
	testenv.RequireRoot(t)
	chfake.LoadOpenAPI(t)
	t.Setenv(chfake.RecordEnv, "") // one record per VMM, in its state directory
	cfg := testenv.FakeVMMSpec(t, chfake.Env, t.TempDir()).Config
	cfg.RootfsMode, cfg.VirtioFSD = vm.ShareVirtioFS, cfg.Path
	if edit != nil {
		edit(&cfg)
	}
	// A short template directory: the build's sockets live below it.
	tdir, err := os.MkdirTemp("", "kch")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tdir) })
	b, err := vmbackend.New(ctx, vmbackend.WithHypervisor(vm.CloudHypervisor, cfg), vmbackend.WithDefaultHypervisor(vm.CloudHypervisor),
		vmbackend.WithTemplateDir(filepath.Join(tdir, "t")), vmbackend.WithAgentTimeout(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.RemoveTemplates(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return b
}

// chTemplates lists b's templates, failing unless all are Cloud
// Hypervisor's.
func chTemplates(t *testing.T, b *vmbackend.Backend) []vmbackend.TemplateInfo {
	t.Helper()
	ts := b.TemplateInfos()
	for _, ti := range ts {
		if ti.Hypervisor != vm.CloudHypervisor || ti.VCPUs != vm.DefaultVCPUs || ti.MemoryMB != vm.DefaultMemoryMB {
			t.Errorf("template %+v: want cloud-hypervisor's, default sizes", ti)
		}
	}
	return ts
}

// metaStamp identifies one build of the template in dir.
func metaStamp(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// chShutdown shuts bi down and returns what its fake VMM recorded,
// checking it left nothing: no VMM or virtiofsd, no mount, no socket.
func chShutdown(t *testing.T, bi backend.Instance, sb backend.Sandbox) chfake.Record {
	t.Helper()
	pid := int(bi.(*vmbackend.Instance).Pid())
	if err := bi.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := chfake.ReadRecord(t, filepath.Join(sb.StateDir, "vm", chfake.RecordName))
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("VMM %d of %s still runs after Shutdown (%v)", pid, sb.ID, err)
	}
	noneLeft(t, sb.StateDir)
	return r
}

// noneLeft fails when a process, mount or socket of the sandbox in dir is left.
func noneLeft(t *testing.T, dir string) {
	t.Helper()
	if ps := procsNaming(dir); len(ps) != 0 {
		t.Errorf("processes naming %s left: %v", dir, ps)
	}
	if ms := mountsUnder(dir); len(ms) != 0 {
		t.Errorf("mounts left under %s: %v", dir, ms)
	}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode()&os.ModeSocket != 0 {
			t.Errorf("socket left: %s", p)
		}
		return nil
	})
}

// procsNaming lists the processes whose command line contains s.
func procsNaming(s string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(b, []byte(s)) {
			out = append(out, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

// restoredCalls checks that a clone's VMM was restored, not booted: the
// API calls are vmm.ping, vm.restore, vm.resume, health probes
// (vm.info) and the shutdown.
func restoredCalls(t *testing.T, who string, r chfake.Record) {
	t.Helper()
	got := strings.Join(r.Log, ",")
	mid := strings.TrimSuffix(strings.TrimPrefix(got, "GET /vmm.ping,PUT /vm.restore,PUT /vm.resume"), "PUT /vm.shutdown,PUT /vmm.shutdown")
	if mid == got || strings.Trim(strings.ReplaceAll(mid, "GET /vm.info", ""), ",") != "" {
		t.Errorf("%s: API calls %s, want vmm.ping, vm.restore, vm.resume, vm.info probes, vm.shutdown, vmm.shutdown", who, got)
	}
	if u := r.Bodies["/vm.restore"]["source_url"]; !strings.HasPrefix(u.(string), "file:///") {
		t.Errorf("%s: vm.restore source_url %v", who, u)
	}
}

// bootedCalls checks that a VMM booted cold (vm.create, vm.boot).
func bootedCalls(t *testing.T, who string, r chfake.Record) {
	t.Helper()
	if got := strings.Join(r.Log, ","); !strings.HasPrefix(got, "GET /vmm.ping,PUT /vm.create,PUT /vm.boot,") || strings.Contains(got, "/vm.restore") {
		t.Errorf("%s: API calls %s, want a cold boot (vm.create, vm.boot)", who, got)
	}
}

// TestCHTemplateFirstNeedThenRestore: the first Cloud Hypervisor sandbox
// builds the template (vm.create, vm.boot, vm.pause, vm.snapshot) and
// is restored from it, the next one is restored from the same template
// (vm.restore, vm.resume: no build); each clone's own guest agent
// answers on its own hybrid vsock socket, and SetupSandbox gives it the
// pod's hostname, the host's clock and 64 bytes of host entropy and
// mounts its share (virtio-fs), as for QEMU; Shutdown leaves nothing.
// Every request is validated against the OpenAPI description.
func TestCHTemplateFirstNeedThenRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := chBackend(t, ctx, nil)
	journal := filepath.Join(t.TempDir(), "journal")
	t.Setenv(chfake.JournalEnv, journal)
	var stamp string
	for i, id := range []string{"ch-first", "ch-second"} {
		before := time.Now()
		sb := backend.Sandbox{ID: id, Hostname: "pod-" + id, StateDir: t.TempDir()}
		bi, err := b.Start(ctx, sb)
		if err != nil {
			t.Fatalf("start %s: %v", id, err)
		}
		t.Cleanup(func() { bi.Shutdown(context.Background()) })
		after := time.Now()
		inst := bi.(*vmbackend.Instance)
		if !inst.FromTemplate() {
			t.Errorf("%s booted cold, want restored from the template", id)
		}
		if want := chfake.KernelRelease(int(inst.Pid())); inst.GuestKernelRelease() != want {
			t.Errorf("%s: the agent that answered is %q, want its own VMM's guest %q", id, inst.GuestKernelRelease(), want)
		}
		ts := chTemplates(t, b)
		if len(ts) != 1 {
			t.Fatalf("after %s: templates %v, want one", id, ts)
		}
		if i == 0 {
			stamp = metaStamp(t, ts[0].Dir)
		} else if metaStamp(t, ts[0].Dir) != stamp {
			t.Errorf("the template was rebuilt for %s", id)
		}
		r := chShutdown(t, bi, sb)
		restoredCalls(t, id, r)
		var setup []chfake.AgentCall
		for _, c := range r.Agent {
			if c.Method == "SetupSandbox" {
				setup = append(setup, c)
			}
		}
		if len(setup) != 1 {
			t.Fatalf("%s: agent calls %+v, want one SetupSandbox", id, r.Agent)
		}
		c := setup[0]
		if c.Hostname != sb.Hostname || c.EntropyBytes != 64 || c.ClockUnixNano < before.UnixNano() || c.ClockUnixNano > after.UnixNano() {
			t.Errorf("%s: SetupSandbox %+v, want hostname %s, 64 bytes of entropy, the host's clock", id, c, sb.Hostname)
		}
		if strings.Join(c.Mounts, ",") != "virtiofs:"+vm.ShareTag+":"+vm.GuestSharedDir {
			t.Errorf("%s: SetupSandbox mounts %v, want the share over virtio-fs", id, c.Mounts)
		}
	}
	// Three VMMs ran: the template's builder, then the two clones.
	rs := chfake.ReadJournal(t, journal)
	if len(rs) != 3 {
		t.Fatalf("%d VMMs recorded, want 3 (one build, two clones): %+v", len(rs), rs)
	}
	want := "GET /vmm.ping,PUT /vm.create,PUT /vm.boot,PUT /vm.pause,PUT /vm.snapshot,PUT /vm.shutdown,PUT /vmm.shutdown"
	if got := strings.Join(rs[0].Log, ","); got != want || len(rs[0].Problems) > 0 {
		t.Errorf("the template build's API calls %s (problems %v), want %s", got, rs[0].Problems, want)
	}
}

// TestCHTemplateColdBoot: a sandbox whose sizes differ from the
// template's defaults, one with the annotation kuasar.io/vm-template:
// "off", and every sandbox of a backend with template = "off" boot cold
// (vm.create, vm.boot) and build no template.
func TestCHTemplateColdBoot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name string
		sb   backend.Sandbox
		off  bool
	}{
		{"other sizes", backend.Sandbox{Resources: backend.Resources{MemoryLimitBytes: 1 << 30}}, false},
		{"annotation", backend.Sandbox{Annotations: map[string]string{vmbackend.TemplateAnnotation: vmbackend.TemplateOff}}, false},
		{"template off", backend.Sandbox{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := chBackend(t, ctx, func(c *vm.Config) {
				if tc.off {
					c.Template = vmbackend.TemplateOff
				}
			})
			sb := tc.sb
			sb.ID, sb.StateDir = "ch-cold", t.TempDir()
			bi, err := b.Start(ctx, sb)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { bi.Shutdown(context.Background()) })
			if bi.(*vmbackend.Instance).FromTemplate() {
				t.Error("restored from a template, want a cold boot")
			}
			if ts := b.TemplateInfos(); len(ts) != 0 {
				t.Errorf("templates built: %v", ts)
			}
			bootedCalls(t, tc.name, chShutdown(t, bi, sb))
		})
	}
}

// TestCHTemplateCorrupt: a template whose state file does not unpack, or
// whose device state the VMM refuses (HTTP 400 to vm.restore), makes the
// next sandbox boot cold (and run), and is removed; the sandbox after it
// is restored from a rebuilt template. The template is built ahead of
// time (Backend.BuildTemplates, as `kuasar vm-templates build` does).
func TestCHTemplateCorrupt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name    string
		corrupt func(packed []byte) []byte
	}{
		{"state file not unpackable", func(p []byte) []byte { return bytes.Repeat([]byte("x"), len(p)) }},
		{"device state refused", func(p []byte) []byte {
			var m map[string]any
			if err := json.Unmarshal(p, &m); err != nil {
				t.Fatal(err)
			}
			m["files"].(map[string]any)["state.json"] = []byte("corrupt{")
			out, _ := json.Marshal(m)
			if len(out) > len(p) {
				t.Fatalf("corrupted state file longer than the original")
			}
			// Same size (the store checks it): JSON allows trailing space.
			return append(out, bytes.Repeat([]byte(" "), len(p)-len(out))...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := chBackend(t, ctx, nil)
			dir, err := b.BuildTemplates(ctx)
			if err != nil || dir == "" {
				t.Fatalf("BuildTemplates: %q %v", dir, err)
			}
			stamp := metaStamp(t, dir)
			st := filepath.Join(dir, "state")
			p, err := os.ReadFile(st)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(st, tc.corrupt(p), 0o600); err != nil {
				t.Fatal(err)
			}
			sb := backend.Sandbox{ID: "ch-corrupt", StateDir: t.TempDir()}
			bi, err := b.Start(ctx, sb)
			if err != nil {
				t.Fatalf("start with a corrupt template: %v (want a cold boot)", err)
			}
			t.Cleanup(func() { bi.Shutdown(context.Background()) })
			if bi.(*vmbackend.Instance).FromTemplate() {
				t.Error("restored from a corrupt template")
			}
			if ts := b.TemplateInfos(); len(ts) != 0 {
				t.Errorf("the corrupt template is still listed: %v", ts)
			}
			bootedCalls(t, "after the corrupt template", chShutdown(t, bi, sb))

			sb2 := backend.Sandbox{ID: "ch-rebuilt", StateDir: t.TempDir()}
			bi2, err := b.Start(ctx, sb2)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { bi2.Shutdown(context.Background()) })
			if !bi2.(*vmbackend.Instance).FromTemplate() {
				t.Error("the next sandbox booted cold, want restored from a rebuilt template")
			}
			ts := chTemplates(t, b)
			if len(ts) != 1 || metaStamp(t, ts[0].Dir) == stamp {
				t.Errorf("templates %v: want one, rebuilt", ts)
			}
			restoredCalls(t, "after the rebuild", chShutdown(t, bi2, sb2))
		})
	}
}

// TestCHRestoreKilled: a Cloud Hypervisor killed during vm.restore fails
// the start (the template is not at fault: it is kept, and no cold boot
// hides the failure) and leaves nothing behind: no VMM, virtiofsd or
// namespace helper, no mount, no socket, nothing in the sandbox's
// directory.
func TestCHRestoreKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := chBackend(t, ctx, nil)
	if _, err := b.BuildTemplates(ctx); err != nil {
		t.Fatal(err)
	}
	t.Setenv(chfake.DieAtEnv, "/vm.restore")
	sb := backend.Sandbox{ID: "ch-killed", StateDir: t.TempDir()}
	bi, err := b.Start(ctx, sb)
	if err == nil {
		bi.Shutdown(ctx)
		t.Fatal("start succeeded though the VMM was killed during vm.restore")
	}
	if !strings.Contains(err.Error(), "killed by signal 9") {
		t.Errorf("start: %v, want the VMM's death named", err)
	}
	noneLeft(t, sb.StateDir)
	if ents, _ := os.ReadDir(sb.StateDir); len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("left in the sandbox's directory: %v", names)
	}
	if ts := chTemplates(t, b); len(ts) != 1 {
		t.Errorf("templates %v: the template must be kept", ts)
	}
}
