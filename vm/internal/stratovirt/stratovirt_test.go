package stratovirt_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/qmp"
	"github.com/kuasar-go/kuasar/vm/internal/stratovirt"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
)

// These tests verify the driver against StratoVirt's specification only
// (its documented command line and QMP dialect): StratoVirt itself cannot
// be obtained here.

// fakeQMP is a StratoVirt-like QMP peer: greeting, one client at a time,
// one command in flight, string ids echoed, an event sent before every
// reply (to be skipped), commands recorded and protocol violations noted.
type fakeQMP struct {
	mu       sync.Mutex
	cmds     []string
	problems []string
	clients  int
	status   string
	quit     chan struct{}
}

func serveFakeQMP(l net.Listener) *fakeQMP {
	f := &fakeQMP{status: "running", quit: make(chan struct{})}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			busy := f.clients > 0
			if !busy {
				f.clients++
			}
			f.mu.Unlock()
			if busy {
				// StratoVirt serves one QMP client: refuse others.
				c.Close()
				continue
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *fakeQMP) problem(format string, a ...any) {
	f.mu.Lock()
	f.problems = append(f.problems, fmt.Sprintf(format, a...))
	f.mu.Unlock()
}

func (f *fakeQMP) serve(c net.Conn) {
	defer func() {
		c.Close()
		f.mu.Lock()
		f.clients--
		f.mu.Unlock()
	}()
	fmt.Fprintln(c, `{"QMP":{"version":{"StratoVirt":{"micro":1,"minor":0,"major":2}},"capabilities":[]}}`)
	rd := bufio.NewReader(c)
	negotiated := false
	for {
		line, err := rd.ReadBytes('\n')
		if err != nil {
			return
		}
		if rd.Buffered() > 0 {
			f.problem("a second command was sent before the reply to %s", line)
		}
		var req struct {
			Execute   string          `json:"execute"`
			ID        json.RawMessage `json:"id"`
			Arguments json.RawMessage `json:"arguments"`
		}
		if err := json.Unmarshal(line, &req); err != nil {
			f.problem("bad JSON %q", line)
			return
		}
		var id string
		if err := json.Unmarshal(req.ID, &id); err != nil || id == "" {
			f.problem("%s: id %s is not a non-empty string", req.Execute, req.ID)
		}
		f.mu.Lock()
		f.cmds = append(f.cmds, req.Execute)
		f.mu.Unlock()
		if !negotiated && req.Execute != "qmp_capabilities" {
			f.problem("%s before qmp_capabilities", req.Execute)
		}
		// An asynchronous event the client must skip.
		fmt.Fprintln(c, `{"event":"STOP","data":{},"timestamp":{"seconds":1,"microseconds":2}}`)
		idJSON, _ := json.Marshal(id)
		switch req.Execute {
		case "qmp_capabilities":
			negotiated = true
			fmt.Fprintf(c, "{\"return\":{},\"id\":%s}\n", idJSON)
		case "query-status":
			f.mu.Lock()
			st := f.status
			f.mu.Unlock()
			fmt.Fprintf(c, "{\"return\":{\"running\":%v,\"singlestep\":false,\"status\":%q},\"id\":%s}\n", st == "running", st, idJSON)
		case "quit":
			fmt.Fprintf(c, "{\"return\":{},\"id\":%s}\n", idJSON)
			fmt.Fprintln(c, `{"event":"SHUTDOWN","data":{"guest":false,"reason":"host-qmp-quit"},"timestamp":{"seconds":1,"microseconds":3}}`)
			select {
			case <-f.quit:
			default:
				close(f.quit)
			}
			return
		default:
			fmt.Fprintf(c, "{\"error\":{\"class\":\"CommandNotFound\",\"desc\":\"The command %s has not been found\"},\"id\":%s}\n", req.Execute, idJSON)
		}
	}
}

func TestQMPDialect(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f := serveFakeQMP(l)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := stratovirt.DialQMP(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	// One client: a second connection gets no greeting.
	if q2, err := stratovirt.DialQMP(ctx, sock); err == nil {
		q2.Close()
		t.Error("second QMP client accepted")
	}
	st, err := q.QueryStatus(ctx)
	if err != nil || st != "running" {
		t.Fatalf("query-status: %q %v", st, err)
	}
	f.mu.Lock()
	f.status = "paused"
	f.mu.Unlock()
	if st, _ := q.QueryStatus(ctx); st != "paused" {
		t.Errorf("query-status after pause: %q", st)
	}
	var qe *qmp.Error
	if _, err := q.Execute(ctx, "no-such-command", nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("unknown command: %v, want a CommandNotFound reply", err)
	}
	if err := q.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	q.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	if want := []string{"qmp_capabilities", "query-status", "query-status", "no-such-command", "quit"}; !slices.Equal(f.cmds, want) {
		t.Errorf("commands %v, want %v", f.cmds, want)
	}
	if len(f.problems) > 0 {
		t.Errorf("protocol violations: %v", f.problems)
	}
}

func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	v, err := stratovirt.New(vm.Spec{ID: "sb1", StateDir: dir, SharedDir: filepath.Join(dir, "shared"), VCPUs: 2, MemoryMB: 384,
		Config: vm.Config{Path: "/bin/true", Kernel: "/bin/true", Initramfs: "/bin/true", VirtioFSD: "/bin/true"}})
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(v.Args(), " ")
	cid := stratovirt.GuestCID("sb1")
	for _, want := range []string{
		"-machine microvm,mem-share=on", "-smp 2", "-m 384", "-kernel /bin/true", "-initrd /bin/true",
		"-qmp unix:" + filepath.Join(dir, "qmp.sock") + ",server,nowait",
		fmt.Sprintf("-device vhost-vsock-device,id=vsock0,guest-cid=%d", cid),
		"-device vhost-user-fs-device,id=fs0,chardev=virtiofs,tag=kuasar",
		"kuasar.channel=vsock",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("command line lacks %q:\n%s", want, args)
		}
	}
	if cid < 3 {
		t.Errorf("guest cid %d is reserved", cid)
	}
	// Seccomp is StratoVirt's default; only -disable-seccomp turns it off
	// (config_guidebook.md, "Seccomp"), so it must never be passed.
	if strings.Contains(args, "disable-seccomp") {
		t.Errorf("command line turns StratoVirt's seccomp filter off:\n%s", args)
	}
	for _, a := range []string{"-disable-seccomp", "--disable-seccomp"} {
		_, err := stratovirt.New(vm.Spec{ID: "x", StateDir: dir, Config: vm.Config{Path: "/bin/true", Kernel: "/bin/true", Initramfs: "/bin/true", RootfsMode: vm.ShareBlock, ExtraArgs: []string{a}}})
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("extra_args %s: %v, want InvalidArgument", a, err)
		}
	}
	if got := strings.Join(stratovirt.BlockArgs(0, "/img.erofs"), " "); got != "-drive id=drive0,file=/img.erofs,readonly=on,direct=off -device virtio-blk-device,drive=drive0,id=blk0" {
		t.Errorf("block args %q", got)
	}
	if _, err := stratovirt.New(vm.Spec{ID: "x", StateDir: dir, SharedDir: dir, Config: vm.Config{Path: "/bin/true", Kernel: "/bin/true", Initramfs: "/bin/true"}}); err == nil || !strings.Contains(err.Error(), `"virtiofsd"`) {
		t.Errorf("virtio-fs without virtiofsd: %v, want an error naming the virtiofsd key", err)
	}
	if _, err := stratovirt.New(vm.Spec{ID: "x", StateDir: dir, Config: vm.Config{Path: "/bin/true", Kernel: "/bin/true", Initramfs: "/bin/true", RootfsMode: "9p"}}); err == nil {
		t.Error("9p accepted for StratoVirt")
	}
}

// TestDriverLifecycle runs the driver with this test binary re-executed as
// a fake "stratovirt" that serves the QMP dialect on its -qmp socket.
func TestDriverLifecycle(t *testing.T) {
	state := t.TempDir()
	v, err := stratovirt.New(testenv.FakeVMMSpec(t, "KUASAR_FAKE_STRATOVIRT", state))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.StartHealthy(t, v)
	pid := v.Pid()
	if err := v.Stop(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if len(b) > 0 {
			t.Errorf("fake VMM %d still running after Stop", pid)
		}
	}
	testenv.NoSockets(t, state)
}

func TestMain(m *testing.M) {
	if os.Getenv("KUASAR_FAKE_STRATOVIRT") == "1" {
		for _, a := range os.Args[1:] {
			if p, ok := strings.CutPrefix(a, "--socket-path="); ok {
				// A fake virtiofsd: serve the vhost-user socket until killed.
				if _, err := net.Listen("unix", p); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				select {}
			}
		}
		var sock string
		for i, a := range os.Args {
			if a == "-qmp" && i+1 < len(os.Args) {
				sock = strings.TrimSuffix(strings.TrimPrefix(os.Args[i+1], "unix:"), ",server,nowait")
			}
		}
		l, err := net.Listen("unix", sock)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		f := serveFakeQMP(l)
		<-f.quit
		os.Exit(0)
	}
	os.Exit(m.Run())
}
