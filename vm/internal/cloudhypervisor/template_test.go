package cloudhypervisor_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/vm"
	ch "github.com/kuasar-go/kuasar/vm/internal/cloudhypervisor"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
)

// fakeRecord is what a fake VMM saw, written at vmm.shutdown.
type fakeRecord struct {
	Log      []string
	Problems []string
	Bodies   map[string]map[string]any
}

func readRecord(t *testing.T, stateDir string) fakeRecord {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(stateDir, "fake-record.json"))
	if err != nil {
		t.Fatalf("the fake VMM of %s left no record (it never got vmm.shutdown): %v", stateDir, err)
	}
	var r fakeRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) > 0 {
		t.Errorf("requests of %s violating the OpenAPI description: %v", stateDir, r.Problems)
	}
	return r
}

// templateSpecs prepares a test of templates with the fake VMM: the
// OpenAPI description handed to it, one record per VMM, root (mount
// namespaces).
func templateSpecs(t *testing.T) func(id string) vm.Spec {
	t.Helper()
	testenv.RequireRoot(t)
	loadOpenAPI(t)
	if p, err := specFile(); err == nil {
		t.Setenv("KUASAR_CH_OPENAPI", p)
	}
	t.Setenv("KUASAR_FAKE_CH_RECORD", "")
	return func(id string) vm.Spec {
		s := testenv.FakeVMMSpec(t, "KUASAR_FAKE_CH", filepath.Join(t.TempDir(), "vm"))
		s.ID = id
		return s
	}
}

// withVirtioFS makes spec share its own directory over virtio-fs, with
// this test binary as virtiofsd (see serveFakeVirtioFSD).
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

// buildTemplate snapshots a template with the fake VMM into a new
// directory and returns it.
func buildTemplate(t *testing.T, ctx context.Context, spec vm.Spec) string {
	t.Helper()
	snap := t.TempDir()
	b, err := ch.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(t.TempDir(), "work")
	if err := b.BuildTemplate(ctx, work, snap, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("the build's work directory is left: %v", err)
	}
	return snap
}

// TestTemplateSnapshotRestore builds a template (vm.create, vm.boot, the
// agent's ready line, vm.pause, vm.snapshot) and restores two clones from
// it (vm.restore, vm.resume), each request validated against the OpenAPI
// description. The snapshot's config names the canonical paths, yet each
// clone's hybrid vsock socket and console are its own, in its own state
// directory, and answer there, and each reaches its own virtiofsd through
// the snapshot's virtio-fs socket; nothing appears on the host under the
// canonical directories.
func TestTemplateSnapshotRestore(t *testing.T) {
	newSpec := templateSpecs(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	snap := buildTemplate(t, ctx, withVirtioFS(t, newSpec("tpl")))

	var cfg map[string]any
	raw, err := os.ReadFile(filepath.Join(snap, ch.SnapshotConfigName))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(raw, &cfg)
	if got := cfg["vsock"].(map[string]any)["socket"]; got != filepath.Join(ch.VMDir, ch.VsockSocketName) {
		t.Errorf("snapshot's vsock socket %v, want the canonical %s", got, filepath.Join(ch.VMDir, ch.VsockSocketName))
	}

	clones := map[string]*ch.VM{}
	shares := map[string]string{}
	for _, id := range []string{"a", "b"} {
		spec := withVirtioFS(t, newSpec(id))
		shares[spec.StateDir] = spec.SharedDir
		v, err := ch.New(spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.StartFromTemplate(ctx, snap); err != nil {
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
		// Its own agent channel.
		c, err := v.DialAgent(ctx)
		if err != nil {
			t.Fatalf("agent channel of %s: %v", dir, err)
		}
		io.WriteString(c, dir)
		got := make([]byte, len(dir))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != dir {
			t.Errorf("agent channel of %s echoed %q (%v)", dir, got, err)
		}
		c.Close()
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
		r := readRecord(t, dir)
		want := "GET /vmm.ping,PUT /vm.restore,PUT /vm.resume,GET /vm.info,PUT /vm.shutdown,PUT /vmm.shutdown"
		if got := strings.Join(r.Log, ","); got != want {
			t.Errorf("clone %s: API calls %s, want %s", dir, got, want)
		}
		if got := r.Bodies["/vm.restore"]["source_url"]; got != "file://"+ch.SnapshotDir {
			t.Errorf("vm.restore source_url %v, want file://%s", got, ch.SnapshotDir)
		}
		testenv.NoSockets(t, dir)
	}
	// The snapshot is intact for later clones.
	if b, _ := os.ReadFile(filepath.Join(snap, ch.SnapshotConfigName)); string(b) != string(raw) {
		t.Error("the snapshot's config changed")
	}
}

// TestTemplateBuildSequence checks the build's exact requests: the VM is
// paused before vm.snapshot, which names the canonical snapshot
// directory, and the VMM is shut down.
func TestTemplateBuildSequence(t *testing.T) {
	newSpec := templateSpecs(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rec := filepath.Join(t.TempDir(), "record.json")
	t.Setenv("KUASAR_FAKE_CH_RECORD", rec) // the build's directory goes
	snap := buildTemplate(t, ctx, newSpec("tpl"))
	raw, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	var r fakeRecord
	json.Unmarshal(raw, &r)
	if len(r.Problems) > 0 {
		t.Errorf("spec violations: %v", r.Problems)
	}
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
	for _, name := range []string{"config.json", "state.json", "memory-ranges"} {
		if _, err := os.Stat(filepath.Join(snap, name)); err != nil {
			t.Errorf("snapshot lacks %s: %v", name, err)
		}
	}
}

// TestTemplateRestoreFails: a snapshot whose device state the VMM refuses
// fails the start with InvalidArgument and leaves no VMM, socket or
// record of a process; a missing snapshot fails before anything starts.
func TestTemplateRestoreFails(t *testing.T) {
	newSpec := templateSpecs(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	snap := buildTemplate(t, ctx, newSpec("tpl"))
	if err := os.WriteFile(filepath.Join(snap, "state.json"), []byte("corrupt{"), 0o600); err != nil {
		t.Fatal(err)
	}
	spec := newSpec("broken")
	v, err := ch.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	err = v.StartFromTemplate(ctx, snap)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "vm.restore") {
		t.Fatalf("restore of a corrupt snapshot: %v, want InvalidArgument from vm.restore", err)
	}
	if pid := v.Pid(); pid != 0 {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("VMM %d still runs after the failed restore (%v)", pid, err)
		}
	}
	testenv.NoSockets(t, spec.StateDir)
	if _, err := os.Stat(filepath.Join(spec.StateDir, ch.VMMLogName+".proc")); !os.IsNotExist(err) {
		t.Errorf("the failed VMM's record is left: %v", err)
	}

	v2, _ := ch.New(newSpec("none"))
	if err := v2.StartFromTemplate(ctx, t.TempDir()); !errdefs.IsNotFound(err) {
		t.Errorf("restore from an empty directory: %v, want NotFound", err)
	}
	if v2.Pid() != 0 {
		t.Error("a VMM was started for a missing snapshot")
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
		s := testenv.FakeVMMSpec(t, "KUASAR_FAKE_CH", filepath.Join(t.TempDir(), "vm"))
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
