package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/vmm"
)

// fakeMonitor is a QMP peer on a real unix socket: it greets, accepts
// qmp_capabilities, then hands every later command (its id and name) to
// serve, which answers with the lines it returns (none: never answers).
func fakeMonitor(t *testing.T, path string, serve func(n int, id json.RawMessage) []string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		t.Cleanup(func() { c.Close() })
		rd := bufio.NewReader(c)
		c.Write([]byte(`{"QMP":{"version":{},"capabilities":[]}}` + "\n"))
		for n := 0; ; n++ {
			line, err := rd.ReadBytes('\n')
			if err != nil {
				return
			}
			var req struct {
				Execute string          `json:"execute"`
				ID      json.RawMessage `json:"id"`
			}
			if json.Unmarshal(line, &req) != nil {
				return
			}
			if req.Execute == "qmp_capabilities" {
				c.Write([]byte(reply(req.ID, `{}`) + "\n"))
				n--
				continue
			}
			for _, out := range serve(n, req.ID) {
				c.Write([]byte(out + "\n"))
			}
		}
	}()
}

// reply is a QMP reply line returning ret, echoing id when the command
// had one (as QEMU does).
func reply(id json.RawMessage, ret string) string {
	if len(id) == 0 {
		return `{"return":` + ret + `}`
	}
	return `{"return":` + ret + `,"id":` + string(id) + `}`
}

// stalledVM is a VM whose "QEMU" is a live process (sleep) and whose QMP
// connection goes to a fake monitor served by serve.
func stalledVM(t *testing.T, serve func(n int, id json.RawMessage) []string) *VM {
	t.Helper()
	dir := t.TempDir()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	p, err := vmm.Start(sleep, []string{"600"}, filepath.Join(dir, VMMLogName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	fakeMonitor(t, filepath.Join(dir, QMPSocketName), serve)
	v := &VM{spec: vm.Spec{ID: "stalled", StateDir: dir}, accel: AccelTCG}
	v.proc.Store(p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, v.path(QMPSocketName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	v.qmp = q
	return v
}

// TestHealthProbeDeadline checks that Health bounds its QMP probe by its
// own deadline rather than the caller's: a monitor that accepts commands
// and never answers makes Health fail with Unavailable naming the VM and
// the probe while the caller's (agent-timeout-long) context is still
// live, and a broken guest is reported from the reply.
func TestHealthProbeDeadline(t *testing.T) {
	for _, tc := range []struct {
		name     string
		serve    func(n int, id json.RawMessage) []string
		want     []string
		deadline bool
	}{
		{"never-answers", func(int, json.RawMessage) []string { return nil },
			[]string{"stalled", "query-status", "did not answer"}, true},
		{"internal-error", func(_ int, id json.RawMessage) []string {
			return []string{reply(id, `{"status":"internal-error","running":false}`)}
		}, []string{"stalled", "query-status", `"internal-error"`}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := stalledVM(t, tc.serve)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := v.Health(ctx)
			if err == nil {
				t.Fatal("Health succeeded")
			}
			if ctx.Err() != nil {
				t.Fatalf("Health waited for the caller's deadline: %v", err)
			}
			if !errdefs.IsUnavailable(err) {
				t.Errorf("error %q is not Unavailable", err)
			}
			// Unavailable, not the probe's deadline, is what containerd sees.
			if c := status.Code(errgrpc.ToGRPC(err)); c != codes.Unavailable {
				t.Errorf("error %q reaches containerd as %s, want Unavailable", err, c)
			}
			if got := errors.Is(err, os.ErrDeadlineExceeded); got != tc.deadline {
				t.Errorf("error %q: deadline exceeded %v, want %v", err, got, tc.deadline)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

// TestHealthSkipsLateReply checks that the late reply to a probe that gave
// up (here "internal-error") is not taken for the reply to the next probe
// ("running"): replies are matched by id.
func TestHealthSkipsLateReply(t *testing.T) {
	var first json.RawMessage
	v := stalledVM(t, func(n int, id json.RawMessage) []string {
		if n == 0 {
			first = id // answered only once the next probe arrives
			return nil
		}
		return []string{
			reply(first, `{"status":"internal-error","running":false}`),
			`{"event":"STOP","data":{}}`,
			reply(id, `{"status":"running","running":true}`),
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := v.Health(ctx); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("first probe: %v, want a deadline error", err)
	}
	if err := v.Health(ctx); err != nil {
		t.Fatalf("second probe took the first one's late reply: %v", err)
	}
}
