package cloudhypervisor_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/testenv/chfake"
	"github.com/kuasar-go/kuasar/vm"
	ch "github.com/kuasar-go/kuasar/vm/internal/cloudhypervisor"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
)

// These tests verify the driver against Cloud Hypervisor's specification
// only (its OpenAPI description and the documented hybrid vsock
// handshake): Cloud Hypervisor itself cannot be obtained here.

func startFake(t *testing.T) (*chfake.Fake, *ch.Client) {
	t.Helper()
	api := chfake.LoadOpenAPI(t)
	f := chfake.New(api)
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close(); f.Close() })
	return f, ch.NewClient(sock)
}

// TestClientRequestsMatchSpec drives every API call the driver uses
// against the validating fake and checks the fake saw no violation.
func TestClientRequestsMatchSpec(t *testing.T) {
	f, c := startFake(t)
	ctx := context.Background()
	dir, snap := t.TempDir(), t.TempDir()
	spec := vm.Spec{ID: "t", StateDir: dir, SharedDir: dir, VCPUs: 2, MemoryMB: 512, Config: vm.Config{
		Kernel: "/bin/true", Initramfs: "/bin/true", RootfsMode: vm.ShareVirtioFS, VirtioFSD: "/bin/true", Path: "/bin/true",
	}}
	v, err := ch.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	// A restore connects to the virtio-fs backend its config names.
	fsd, err := net.Listen("unix", filepath.Join(dir, ch.FSSocketName))
	if err != nil {
		t.Fatal(err)
	}
	defer fsd.Close()
	go func() {
		for {
			c, err := fsd.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "virtiofsd\n")
			c.Close()
		}
	}()
	steps := []struct {
		name string
		do   func() error
	}{
		{"ping", func() error { _, err := c.Ping(ctx); return err }},
		{"create", func() error { return c.Create(ctx, v.VMConfig()) }},
		{"add-disk", func() error {
			_, err := c.AddDisk(ctx, ch.DiskConfig{Path: "/img.erofs", Readonly: true, ID: "rootfs0"})
			return err
		}},
		{"add-fs", func() error {
			_, err := c.AddFs(ctx, ch.FsConfig{Tag: "extra", Socket: "/s", NumQueues: 1, QueueSize: 1024})
			return err
		}},
		{"add-net", func() error { _, err := c.AddNet(ctx, ch.NetConfig{Tap: "tap0", Mac: "02:00:00:00:00:01"}); return err }},
		{"add-vsock", func() error { _, err := c.AddVsock(ctx, ch.VsockConfig{Cid: 4, Socket: "/v"}); return err }},
		{"boot", func() error { return c.Boot(ctx) }},
		{"info", func() error {
			info, err := c.Info(ctx)
			if err == nil && info.State != "Running" {
				return fmt.Errorf("state %q after boot", info.State)
			}
			return err
		}},
		{"pause", func() error { return c.Pause(ctx) }},
		{"snapshot", func() error { return c.Snapshot(ctx, ch.VmSnapshotConfig{DestinationURL: "file://" + snap}) }},
		{"resume", func() error { return c.Resume(ctx) }},
		{"shutdown", func() error { return c.Shutdown(ctx) }},
		{"delete", func() error { return c.Delete(ctx) }},
		{"restore", func() error { return c.Restore(ctx, ch.RestoreConfig{SourceURL: "file://" + snap}) }},
		{"resume restored", func() error { return c.Resume(ctx) }},
		{"vmm-shutdown", func() error { return c.ShutdownVMM(ctx) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Errorf("%s: %v", s.name, err)
		}
	}
	if len(f.Problems()) > 0 {
		t.Fatalf("requests violating the OpenAPI description:\n%s", strings.Join(f.Problems(), "\n"))
	}
	if got := f.Body("/vm.restore"); fmt.Sprint(got) != fmt.Sprint(map[string]any{"source_url": "file://" + snap, "prefault": false, "resume": false}) {
		t.Errorf("vm.restore body %v: want the snapshot's URL, no prefault, no resume (vm.resume follows)", got)
	}
	body := f.Body("/vm.create")
	mem := body["memory"].(map[string]any)
	if mem["size"].(json.Number).String() != fmt.Sprint(512<<20) || mem["shared"] != true {
		t.Errorf("memory %v: want 512 MiB in bytes, shared for virtio-fs", mem)
	}
	if cpus := body["cpus"].(map[string]any); cpus["boot_vcpus"].(json.Number).String() != "2" {
		t.Errorf("cpus %v", cpus)
	}
	if !strings.Contains(body["payload"].(map[string]any)["cmdline"].(string), "kuasar.channel=vsock") {
		t.Errorf("payload %v lacks kuasar.channel=vsock", body["payload"])
	}
}

// TestValidatorCatchesViolations makes sure the checker is not vacuous: a
// body missing a required field, with an unknown field, or a wrong type,
// must be reported.
func TestValidatorCatchesViolations(t *testing.T) {
	api := chfake.LoadOpenAPI(t)
	for _, tc := range []struct {
		schema, body, want string
	}{
		{"VmConfig", `{"cpus":{"boot_vcpus":1,"max_vcpus":1}}`, `missing required property "payload"`},
		{"VmConfig", `{"payload":{},"bogus":1}`, `unknown property "bogus"`},
		{"MemoryConfig", `{"size":"big"}`, `want integer`},
		{"CpusConfig", `{"boot_vcpus":0,"max_vcpus":1}`, `below minimum`},
		{"ConsoleConfig", `{"mode":"Loud"}`, `not in enum`},
		{"VsockConfig", `{"cid":3}`, `missing required property "socket"`},
		{"VmConfig", `{"payload":{},"landlock_enable":"yes"}`, `want boolean`},
		{"LandlockConfig", `{"path":"/x"}`, `missing required property "access"`},
	} {
		dec := json.NewDecoder(strings.NewReader(tc.body))
		dec.UseNumber()
		var v any
		dec.Decode(&v)
		errs := api.ValidateSchema("body", v, tc.schema)
		if !strings.Contains(strings.Join(errs, "\n"), tc.want) {
			t.Errorf("%s %s: errors %v, want one containing %q", tc.schema, tc.body, errs, tc.want)
		}
	}
}

// TestHybridVsockHandshake checks CONNECT/OK against a fake peer, and
// that data after the OK line reaches the caller intact.
func TestHybridVsockHandshake(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vsock.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				rd := bufio.NewReader(c)
				line, _ := rd.ReadString('\n')
				switch line {
				case "CONNECT 1024\n":
					// Reply and the first guest bytes in one write.
					io.WriteString(c, "OK 1073741825\nhello")
					io.Copy(c, rd)
				default:
					// Refused: close without OK.
				}
			}(c)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := ch.DialHybridVsock(ctx, sock, 1024)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("first bytes after OK: %q %v", buf, err)
	}
	io.WriteString(c, "ping")
	if _, err := io.ReadFull(c, buf[:4]); err != nil || string(buf[:4]) != "ping" {
		t.Fatalf("echo: %q %v", buf[:4], err)
	}
	c.Close()
	if _, err := ch.DialHybridVsock(ctx, sock, 2000); err == nil {
		t.Fatal("CONNECT to a port nobody listens on succeeded")
	}
}

// TestDriverLifecycle runs the driver against the fake VMM as a real
// process (this test binary re-executed): Start creates and boots, the
// agent channel dials through hybrid vsock and the fake agent behind it
// answers Ping, Stop shuts the VM and VMM
// down, and no socket is left.
func TestDriverLifecycle(t *testing.T) {
	// The fake VMM checks every request against the OpenAPI description:
	// skip when it is absent, and hand the fake its absolute path.
	chfake.LoadOpenAPI(t)
	dir := t.TempDir()
	rec := filepath.Join(dir, "record.json")
	t.Setenv(chfake.RecordEnv, rec)
	state := filepath.Join(dir, "state")
	v, err := ch.New(testenv.FakeVMMSpec(t, chfake.Env, state))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.StartHealthy(t, v)
	c, err := v.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rel, err := chfake.Ping(ctx, c); err != nil || rel != chfake.KernelRelease(v.Pid()) {
		t.Fatalf("agent Ping over the channel: %q %v, want %q", rel, err, chfake.KernelRelease(v.Pid()))
	}
	if err := v.Stop(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(rec)
	if err != nil {
		t.Fatalf("fake VMM did not get vmm.shutdown (no record): %v", err)
	}
	var r struct {
		Log      []string
		Problems []string
	}
	json.Unmarshal(raw, &r)
	if len(r.Problems) > 0 {
		t.Errorf("spec violations: %v", r.Problems)
	}
	want := "GET /vmm.ping,PUT /vm.create,PUT /vm.boot,GET /vm.info,PUT /vm.shutdown,PUT /vmm.shutdown"
	if got := strings.Join(r.Log, ","); got != want {
		t.Errorf("API calls %s, want %s", got, want)
	}
	testenv.NoSockets(t, state)
}

// TestSandboxOptions checks the driver's confinement of Cloud Hypervisor
// against its documentation (docs/seccomp.md, docs/landlock.md) and
// OpenAPI description, as Cloud Hypervisor cannot run here: the command
// line turns the seccomp filters on explicitly (--seccomp true), vm.create
// enables Landlock with the state directory as the one extra rule (the
// config's own files are added by Cloud Hypervisor itself), the body
// validates against the schema, and extra_args cannot turn seccomp off.
func TestSandboxOptions(t *testing.T) {
	dir := t.TempDir()
	cfg := vm.Config{Kernel: "/bin/true", Initramfs: "/bin/true", RootfsMode: vm.ShareVirtioFS, VirtioFSD: "/bin/true", Path: "/bin/true"}
	v, err := ch.New(vm.Spec{ID: "t", StateDir: dir, SharedDir: dir, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(v.Args(), " "), "--api-socket path="+filepath.Join(dir, "api.sock")+" --seccomp true"; got != want {
		t.Errorf("command line %q, want %q", got, want)
	}
	c := v.VMConfig()
	if !c.LandlockEnable || len(c.LandlockRules) != 1 || c.LandlockRules[0] != (ch.LandlockConfig{Path: dir, Access: "rw"}) {
		t.Errorf("landlock %v %+v, want enabled with the state directory rw", c.LandlockEnable, c.LandlockRules)
	}
	api := chfake.LoadOpenAPI(t)
	b, _ := json.Marshal(c)
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var body any
	dec.Decode(&body)
	if errs := api.ValidateSchema("body", body, "VmConfig"); len(errs) > 0 {
		t.Errorf("vm.create body %s violates the OpenAPI description: %v", b, errs)
	}
	for _, extra := range [][]string{{"--seccomp", "false"}, {"--seccomp=log"}} {
		cfg.ExtraArgs = extra
		if _, err := ch.New(vm.Spec{ID: "t", StateDir: dir, SharedDir: dir, Config: cfg}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("extra_args %q: %v, want InvalidArgument", extra, err)
		}
	}
}
