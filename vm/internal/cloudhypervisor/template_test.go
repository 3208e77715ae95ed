package cloudhypervisor_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/crashpoint"
	"github.com/kuasar-go/kuasar/internal/procmark"
	"github.com/kuasar-go/kuasar/internal/testenv/chfake"
	"github.com/kuasar-go/kuasar/vm"
	ch "github.com/kuasar-go/kuasar/vm/internal/cloudhypervisor"
	"github.com/kuasar-go/kuasar/vm/internal/template"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
)

// templateSpecs prepares a test of templates with the fake VMM (root:
// mount namespaces; the OpenAPI description handed to it; one record
// per VMM, beside its API socket).
func templateSpecs(t *testing.T) func(id string) vm.Spec {
	t.Helper()
	testenv.RequireRoot(t)
	chfake.LoadOpenAPI(t)
	t.Setenv(chfake.RecordEnv, "")
	return func(id string) vm.Spec {
		s := testenv.FakeVMMSpec(t, chfake.Env, filepath.Join(t.TempDir(), "vm"))
		s.ID = id
		return s
	}
}

// withVirtioFS makes spec share its own directory over virtio-fs, with
// this test binary as virtiofsd (see chfake.Serve).
func withVirtioFS(t *testing.T, spec vm.Spec) vm.Spec {
	t.Helper()
	spec.SharedDir = filepath.Join(filepath.Dir(spec.StateDir), "shared")
	if err := os.MkdirAll(spec.SharedDir, 0o700); err != nil {
		t.Fatal(err)
	}
	spec.Config.RootfsMode = vm.ShareVirtioFS
	spec.Config.VirtioFSD = spec.Config.Path
	return spec
}

// buildTemplate builds the template of spec with the fake VMM into a new
// template.Store (memory files in memDir, "" for the store's directory)
// as the VM backend does, and returns it.
func buildTemplate(t *testing.T, ctx context.Context, spec vm.Spec, memDir string) *template.Template {
	t.Helper()
	store := template.NewStore(filepath.Join(t.TempDir(), "tpl"), memDir)
	t.Cleanup(func() { store.RemoveAll(context.Background()) })
	b, err := ch.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	key, err := b.TemplateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var work string
	tpl, err := store.GetCopied(ctx, key, func(ctx context.Context, _ template.Key, mem, state string) error {
		work = template.WorkDir(ctx)
		return b.BuildTemplate(ctx, work, 20*time.Second, mem, state)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("the build's work directory %s is left: %v", work, err)
	}
	if tpl.Memory() != nil {
		t.Error("GetCopied made a sealed copy of the memory: Cloud Hypervisor copies it itself")
	}
	return tpl
}

// snapshotConfig is the config.json packed in tpl's state file.
func snapshotConfig(t *testing.T, tpl *template.Template) map[string]any {
	t.Helper()
	var p struct{ Files map[string][]byte }
	raw, err := os.ReadFile(tpl.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(p.Files[ch.SnapshotConfigName], &cfg); err != nil {
		t.Fatalf("the template's packed %s: %v", ch.SnapshotConfigName, err)
	}
	return cfg
}

// fileStamp identifies the content of file p as far as a write to it
// would show: size, allocated blocks, modification and change times, and
// a hash of its first MiB (hashing all of a guest's memory is slow).
func fileStamp(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1<<20)
	n, _ := f.ReadAt(b, 0)
	return fmt.Sprintf("%d %d %d %d %x", st.Size, st.Blocks, st.Mtim.Nano(), st.Ctim.Nano(), sha256.Sum256(b[:n]))
}

// TestTemplateSnapshotRestore builds a template (vm.create, vm.boot, the
// agent's ready line, vm.pause, vm.snapshot) into a template.Store, its
// memory on the tmpfs when there is one, and restores two clones from
// it (vm.restore, vm.resume), each request validated against the OpenAPI
// description. The snapshot's config names the canonical paths, yet each
// clone's hybrid vsock socket and console are its own, in its own state
// directory, its own guest agent answers there, and it reaches its own
// virtiofsd through the snapshot's virtio-fs socket; the restoring VMM
// read the template's memory (the fake checks its size and content);
// nothing appears on the host under the canonical directories; the
// template's files are unchanged.
func TestTemplateSnapshotRestore(t *testing.T) {
	newSpec := templateSpecs(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := sha256.Sum256([]byte(t.Name() + strconv.Itoa(os.Getpid())))
	tpl := buildTemplate(t, ctx, withVirtioFS(t, newSpec("tpl")), template.DefaultMemDir("kuasar-test-"+hex.EncodeToString(h[:6])))

	cfg := snapshotConfig(t, tpl)
	if got := cfg["vsock"].(map[string]any)["socket"]; got != filepath.Join(ch.VMDir, ch.VsockSocketName) {
		t.Errorf("snapshot's vsock socket %v, want the canonical %s", got, filepath.Join(ch.VMDir, ch.VsockSocketName))
	}
	var st unix.Stat_t
	if err := unix.Stat(tpl.MemPath, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != int64(tpl.Key.MemoryMB)<<20 || st.Blocks*512 > 1<<20 {
		t.Errorf("template memory %s: %d bytes, %d allocated; want %d, sparse (holes kept)", tpl.MemPath, st.Size, st.Blocks*512, tpl.Key.MemoryMB<<20)
	}
	memStamp, stateStamp := fileStamp(t, tpl.MemPath), fileStamp(t, tpl.StatePath)

	clones := map[string]*ch.VM{}
	shares := map[string]string{}
	for _, id := range []string{"a", "b"} {
		spec := withVirtioFS(t, newSpec(id))
		shares[spec.StateDir] = spec.SharedDir
		v, err := ch.New(spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.StartFromTemplate(ctx, tpl); err != nil {
			t.Fatalf("clone %s: %v", id, err)
		}
		t.Cleanup(func() { v.Stop(context.Background(), time.Second) })
		if err := v.Health(ctx); err != nil {
			t.Fatalf("clone %s after vm.resume: %v", id, err)
		}
		clones[spec.StateDir] = v
	}
	for dir, v := range clones {
		// Its own console: the restoring VMM wrote it through the
		// canonical path.
		b, _ := os.ReadFile(filepath.Join(dir, ch.ConsoleLogName))
		if want := "restored by pid " + strconv.Itoa(v.Pid()); !strings.Contains(string(b), want) {
			t.Errorf("console of %s: %q, want %q (its own VMM's)", dir, b, want)
		}
		// Its own virtiofsd: the snapshot's virtio-fs socket led the
		// restoring VMM to the one serving this sandbox's directory.
		if want := "virtio-fs: virtiofsd for " + shares[dir] + "\n"; !strings.Contains(string(b), want) {
			t.Errorf("console of %s: %q, want %q (its own share)", dir, b, want)
		}
		// Its own agent channel, answered by its own VMM's guest.
		c, err := v.DialAgent(ctx)
		if err != nil {
			t.Fatalf("agent channel of %s: %v", dir, err)
		}
		if rel, err := chfake.Ping(ctx, c); err != nil || rel != chfake.KernelRelease(v.Pid()) {
			t.Errorf("agent of %s answered %q (%v), want %q", dir, rel, err, chfake.KernelRelease(v.Pid()))
		}
	}
	for _, d := range []string{ch.VMDir, ch.SnapshotDir} {
		if ents, _ := os.ReadDir(d); len(ents) != 0 {
			t.Errorf("host's %s holds %d entries: the namespaces' binds leaked", d, len(ents))
		}
	}
	for dir, v := range clones {
		if err := v.Stop(ctx, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		r := chfake.ReadRecord(t, filepath.Join(dir, chfake.RecordName))
		want := "GET /vmm.ping,PUT /vm.restore,PUT /vm.resume,GET /vm.info,PUT /vm.shutdown,PUT /vmm.shutdown"
		if got := strings.Join(r.Log, ","); got != want {
			t.Errorf("clone %s: API calls %s, want %s", dir, got, want)
		}
		if got := r.Bodies["/vm.restore"]["source_url"]; got != "file://"+ch.SnapshotDir {
			t.Errorf("vm.restore source_url %v, want file://%s", got, ch.SnapshotDir)
		}
		testenv.NoSockets(t, dir)
	}
	if fileStamp(t, tpl.MemPath) != memStamp || fileStamp(t, tpl.StatePath) != stateStamp {
		t.Error("the template's memory or state file changed")
	}
}

// TestTemplateBuildSequence checks the build's exact requests: the VM is
// paused before vm.snapshot, which names the canonical snapshot
// directory, and the VMM is shut down; the store holds the snapshot's
// memory as the template's memory file and its other files packed.
func TestTemplateBuildSequence(t *testing.T) {
	newSpec := templateSpecs(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rec := filepath.Join(t.TempDir(), "record.json")
	t.Setenv(chfake.RecordEnv, rec) // the build's directory goes
	tpl := buildTemplate(t, ctx, newSpec("tpl"), "")
	r := chfake.ReadRecord(t, rec)
	want := "GET /vmm.ping,PUT /vm.create,PUT /vm.boot,PUT /vm.pause,PUT /vm.snapshot,PUT /vm.shutdown,PUT /vmm.shutdown"
	if got := strings.Join(r.Log, ","); got != want {
		t.Errorf("API calls %s, want %s", got, want)
	}
	if got := r.Bodies["/vm.snapshot"]["destination_url"]; got != "file://"+ch.SnapshotDir {
		t.Errorf("vm.snapshot destination_url %v, want file://%s", got, ch.SnapshotDir)
	}
	body := r.Bodies["/vm.create"]
	var rules []string
	for _, l := range body["landlock_rules"].([]any) {
		rules = append(rules, l.(map[string]any)["path"].(string))
	}
	if strings.Join(rules, ",") != ch.VMDir+","+ch.SnapshotDir {
		t.Errorf("landlock rules %v, want the canonical directories", rules)
	}
	head := make([]byte, len(chfake.MemoryMarker))
	f, err := os.Open(tpl.MemPath)
	if err != nil {
		t.Fatal(err)
	}
	f.ReadAt(head, 0)
	f.Close()
	if string(head) != chfake.MemoryMarker {
		t.Errorf("the template's memory file starts %q, want the snapshot's memory-ranges", head)
	}
	if got := snapshotConfig(t, tpl)["memory"]; got == nil {
		t.Errorf("the packed config has no memory section: %v", got)
	}
}

// TestTemplateRestoreFails: a template whose device state the VMM
// refuses (HTTP 400) fails the start with a template.Unusable error and
// leaves no VMM, socket, unpacked snapshot or record of a process; a
// state file that does not unpack is Unusable before any VMM starts; a
// missing memory file is NotFound before anything starts.
func TestTemplateRestoreFails(t *testing.T) {
	newSpec := templateSpecs(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tpl := buildTemplate(t, ctx, newSpec("tpl"), "")
	good, err := os.ReadFile(tpl.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	json.Unmarshal(good, &p)
	p["files"].(map[string]any)["state.json"] = []byte("corrupt{")
	refused, _ := json.Marshal(p)
	for _, tc := range []struct {
		name    string
		state   []byte
		started bool // a VMM was started (and must be gone)
	}{
		{"device state refused by the VMM", refused, true},
		{"state file not unpackable", []byte("corrupt{"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(tpl.StatePath, tc.state, 0o600); err != nil {
				t.Fatal(err)
			}
			spec := newSpec("broken")
			v, err := ch.New(spec)
			if err != nil {
				t.Fatal(err)
			}
			err = v.StartFromTemplate(ctx, tpl)
			var u template.Unusable
			if !errors.As(err, &u) {
				t.Fatalf("restore: %v, want a template.Unusable error", err)
			}
			if tc.started != (v.Pid() != 0) {
				t.Errorf("VMM started: %v, want %v", v.Pid() != 0, tc.started)
			}
			if pid := v.Pid(); pid != 0 {
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Errorf("VMM %d still runs after the failed restore (%v)", pid, err)
				}
			}
			testenv.NoSockets(t, spec.StateDir)
			for _, left := range []string{ch.VMMLogName + ".proc", ch.CloneSnapshotName} {
				if _, err := os.Stat(filepath.Join(spec.StateDir, left)); !os.IsNotExist(err) {
					t.Errorf("%s left after the failed restore: %v", left, err)
				}
			}
		})
	}
	if err := os.WriteFile(tpl.StatePath, good, 0o600); err != nil {
		t.Fatal(err)
	}
	gone := *tpl
	gone.MemPath = filepath.Join(t.TempDir(), "none.mem")
	v2, _ := ch.New(newSpec("none"))
	if err := v2.StartFromTemplate(ctx, &gone); !errdefs.IsNotFound(err) {
		t.Errorf("restore without a memory file: %v, want NotFound", err)
	}
	if v2.Pid() != 0 {
		t.Error("a VMM was started for a missing memory file")
	}
}

// TestTemplateKey: two sandboxes that differ only in their ids and
// directories share a template key (the key's config names the canonical
// paths); other sizes or kernel parameters make another key; the version
// is the binary's own.
func TestTemplateKey(t *testing.T) {
	ctx := context.Background()
	key := func(id string, edit func(*vm.Spec)) string {
		t.Helper()
		s := testenv.FakeVMMSpec(t, chfake.Env, filepath.Join(t.TempDir(), "vm"))
		s.ID = id
		if edit != nil {
			edit(&s)
		}
		v, err := ch.New(s)
		if err != nil {
			t.Fatal(err)
		}
		k, err := v.TemplateKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if k.Version != "cloud-hypervisor v53.0-fake" || k.VMM != vm.CloudHypervisor {
			t.Fatalf("key %+v: want the binary's --version and vmm %s", k, vm.CloudHypervisor)
		}
		if strings.Contains(strings.Join(k.Devices, " "), s.StateDir) {
			t.Fatalf("key names the VM's own directory %s: %v", s.StateDir, k.Devices)
		}
		return k.Digest()
	}
	base := key("a", nil)
	for _, tc := range []struct {
		name string
		edit func(*vm.Spec)
		same bool
	}{
		{"another sandbox", nil, true},
		{"more memory", func(s *vm.Spec) { s.VCPUs = vm.DefaultVCPUs; s.MemoryMB = 1024 }, false},
		{"more vCPUs", func(s *vm.Spec) { s.VCPUs = vm.DefaultVCPUs + 1; s.MemoryMB = vm.DefaultMemoryMB }, false},
		{"kernel parameters", func(s *vm.Spec) { s.Config.KernelParams = []string{"debug"} }, false},
	} {
		if got := key("b", tc.edit); (got == base) != tc.same {
			t.Errorf("%s: same key %v, want %v", tc.name, got == base, tc.same)
		}
	}
}

// chBuilderEnv makes TestHelperCHBuilder build: "<store dir>:<state dir>".
const chBuilderEnv = "KUASAR_CH_TEST_BUILDER"

// TestHelperCHBuilder is the builder process TestTemplateBuilderKilled
// kills: it builds a Cloud Hypervisor template (the fake VMM, with
// virtio-fs) in a template.Store until the crash point the test chose.
// It does nothing in a normal test run.
func TestHelperCHBuilder(t *testing.T) {
	v := os.Getenv(chBuilderEnv)
	if v == "" {
		t.Skip("helper process of TestTemplateBuilderKilled")
	}
	dir, state, _ := strings.Cut(v, ":")
	spec := withVirtioFS(t, testenv.FakeVMMSpec(t, chfake.Env, state))
	b, err := ch.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	key, err := b.TemplateKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = template.NewStore(dir, "").GetCopied(context.Background(), key, func(ctx context.Context, _ template.Key, mem, st string) error {
		return b.BuildTemplate(ctx, template.WorkDir(ctx), 20*time.Second, mem, st)
	})
	t.Fatalf("the builder was not killed at %s (GetCopied returned %v)", os.Getenv(crashpoint.Env), err)
}

// TestTemplateBuilderKilled: a builder SIGKILLed while its template VM
// runs (the agent ready, before the snapshot) leaves its Cloud
// Hypervisor (in its own mount namespace) and virtiofsd running, marked
// with the store's build work directory; Reap, as a restarted sandboxer
// or the next `kuasar run` calls it, kills them and removes every file of
// the build, and the next build of the key succeeds. The same crash
// safety as QEMU's builds (vm/internal/template), with the fake VMM.
func TestTemplateBuilderKilled(t *testing.T) {
	testenv.RequireRoot(t)
	chfake.LoadOpenAPI(t)
	dir, state := t.TempDir(), filepath.Join(t.TempDir(), "vm")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCHBuilder$", "-test.count=1")
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, chfake.Env+"=") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, chBuilderEnv+"="+dir+":"+state, crashpoint.Env+"=template.build.agent-ready")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
		t.Fatalf("the builder was not killed: %v\n%s", err, out)
	}
	left, err := procmark.Scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range left {
			procmark.Kill(p)
		}
	})
	if len(left) != 2 {
		t.Fatalf("processes of the dead build: %v, want its VMM and virtiofsd", left)
	}
	s := template.NewStore(dir, "")
	if n, err := s.Reap(context.Background()); err != nil || n != 1 {
		t.Fatalf("Reap = %d, %v; want 1 build cleaned", n, err)
	}
	for _, p := range left {
		if running(p) {
			t.Errorf("process %d of the dead build still runs", p.Pid)
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".lock") {
			t.Errorf("left in the store after Reap: %s", e.Name())
		}
	}
	spec := withVirtioFS(t, testenv.FakeVMMSpec(t, chfake.Env, state))
	b, err := ch.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	key, err := b.TemplateKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetCopied(context.Background(), key, func(ctx context.Context, _ template.Key, mem, st string) error {
		return b.BuildTemplate(ctx, template.WorkDir(ctx), 20*time.Second, mem, st)
	}); err != nil {
		t.Fatalf("the build after Reap: %v", err)
	}
}

// running reports whether p runs (a zombie, which nobody reaped yet
// since its parent died, does not).
func running(p procmark.Proc) bool {
	if !procmark.Alive(p) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// TestTemplateCloneReattach: a clone restored from a template (its VMM
// in a mount namespace of its own) is re-attached after the driver let
// go of it, as after a sandboxer restart: its API, its agent and its
// virtiofsd are found again at its own paths, and Stop ends it.
func TestTemplateCloneReattach(t *testing.T) {
	newSpec := templateSpecs(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tpl := buildTemplate(t, ctx, withVirtioFS(t, newSpec("tpl")), "")
	spec := withVirtioFS(t, newSpec("clone"))
	v, err := ch.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.StartFromTemplate(ctx, tpl); err != nil {
		t.Fatal(err)
	}
	pid := v.Pid()
	v.Detach()
	w, err := ch.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Attach(ctx, pid); err != nil {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("re-attach to the clone: %v", err)
	}
	if err := w.Health(ctx); err != nil {
		t.Errorf("re-attached clone unhealthy: %v", err)
	}
	c, err := w.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rel, err := chfake.Ping(ctx, c); err != nil || rel != chfake.KernelRelease(pid) {
		t.Errorf("agent of the re-attached clone: %q %v", rel, err)
	}
	if err := w.Stop(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(ctx); err != nil {
		t.Fatalf("the re-attached clone still runs after Stop: %v", err)
	}
	testenv.NoSockets(t, spec.StateDir)
}
