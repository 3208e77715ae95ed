package vmbackend_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/qemu"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// procStatus reads /proc/pid/status into a map.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// capMask is the /proc/PID/status rendering of a capability set.
func capMask(caps []uintptr) string {
	var m uint64
	for _, c := range caps {
		m |= 1 << c
	}
	return fmt.Sprintf("%016x", m)
}

// checkConfined checks QEMU process pid from the host: seccomp filter in
// force, no_new_privs, mount, network and IPC namespaces of its own, a non-root uid in the configured range that is
// also its gid, no supplementary groups, exactly the capabilities of
// rootfs mode in every set, and a root that holds its own directories
// (visible) but none of the host's secrets or another sandbox's files.
// It returns the uid.
func checkConfined(t *testing.T, pid int, mode string, own, foreign []string) int {
	t.Helper()
	st := procStatus(t, pid)
	caps := capMask(qemu.KeptCapabilities(mode))
	for _, tc := range []struct{ key, want string }{
		{"Seccomp", "2"}, {"NoNewPrivs", "1"}, {"Groups", ""},
		{"CapEff", caps}, {"CapPrm", caps}, {"CapBnd", caps}, {"CapAmb", caps},
	} {
		if st[tc.key] != tc.want {
			t.Errorf("qemu %d (%s): %s %q, want %q", pid, mode, tc.key, st[tc.key], tc.want)
		}
	}
	uids, gids := strings.Fields(st["Uid"]), strings.Fields(st["Gid"])
	if len(uids) != 4 || len(gids) != 4 {
		t.Fatalf("qemu %d: Uid %q Gid %q", pid, st["Uid"], st["Gid"])
	}
	uid, _ := strconv.Atoi(uids[0])
	for i := range uids {
		if uids[i] != uids[0] || gids[i] != uids[0] {
			t.Errorf("qemu %d: Uid %q Gid %q, want one uid for all and gid = uid", pid, st["Uid"], st["Gid"])
			break
		}
	}
	if base, count := (vm.Config{}).VMMUIDs(); uid < int(base) || uid >= int(base+count) {
		t.Errorf("qemu %d runs as uid %d, want one of the VMM range %d+%d", pid, uid, base, count)
	}
	for _, ns := range []string{"mnt", "net", "ipc"} {
		mine, _ := os.Readlink("/proc/self/ns/" + ns)
		its, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/" + ns)
		if err != nil || its == mine {
			t.Errorf("qemu %d: %s namespace %q %v, want its own (host's is %q)", pid, ns, its, err, mine)
		}
	}
	root := "/proc/" + strconv.Itoa(pid) + "/root"
	for _, p := range own {
		if _, err := os.Stat(root + p); err != nil {
			t.Errorf("qemu %d does not see its own %s: %v", pid, p, err)
		}
	}
	for _, p := range append([]string{"/etc/shadow", "/etc/passwd", "/proc/sys", "/proc/kcore", "/sys/kernel", "/var/lib", "/dev/mem", "/run"}, foreign...) {
		if _, err := os.Lstat(p); err != nil {
			continue // not on this host: nothing to hide
		}
		if _, err := os.Lstat(root + p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("qemu %d sees %s (%v): its mount namespace must not hold it", pid, p, err)
		}
	}
	// Other processes are hidden from QEMU by hidepid, which depends on
	// the reader: check the option rather than a look from here.
	mi, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/mountinfo")
	procOK := false
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == "/proc" {
			procOK = strings.Contains(l, "hidepid=invisible") && strings.Contains(l, "subset=pid")
		}
	}
	if !procOK {
		t.Errorf("qemu %d: /proc not mounted with hidepid=invisible,subset=pid:\n%s", pid, mi)
	}
	return uid
}

// TestVMMConfined starts two 9p sandboxes and checks each QEMU is
// confined (checkConfined): seccomp, no_new_privs, its own uid (the two
// differ), the 9p capability set, and a mount namespace without the host's
// files or the other sandbox's. Then a container shows the share still
// works with only those capabilities — it writes a file, chowns it and
// sets its set-group-ID bit, the host sees the guest's owner and mode — while creating a device node in the
// host directory is refused (no CAP_MKNOD) though the guest itself may
// create one in its own /dev.
func TestVMMConfined(t *testing.T) {
	a, ctx := vmTest(t, 4*time.Minute)
	b := qemuBackend(t, ctx, qemuConfig(t, a))
	biA, sbA := startSandbox(t, ctx, b, backend.Sandbox{ID: "confined-a"})
	defer biA.Shutdown(context.Background())
	biB, sbB := startSandbox(t, ctx, b, backend.Sandbox{ID: "confined-b"})
	defer biB.Shutdown(context.Background())

	uidA := checkConfined(t, int(biA.Pid()), vm.Share9P,
		[]string{filepath.Join(sbA.StateDir, "vm", "qmp.sock"), filepath.Join(sbA.StateDir, "shared"), "/dev/null", "/dev/urandom", "/proc/self/fd"},
		[]string{sbB.StateDir, filepath.Join(sbA.StateDir, "sandbox.json")})
	uidB := checkConfined(t, int(biB.Pid()), vm.Share9P,
		[]string{filepath.Join(sbB.StateDir, "shared")}, []string{sbA.StateDir})
	if uidA == uidB {
		t.Errorf("both VMMs run as uid %d: each needs its own", uidA)
	}

	root := busyboxRootfs(t)
	fifos := t.TempDir()
	out := newFifoReader(t, filepath.Join(fifos, "out"))
	errOut := newFifoReader(t, filepath.Join(fifos, "err"))
	bd := bundle(t, root, "/bin/busybox", "sh", "-c",
		"echo data > /tmp/f && /bin/busybox chown 1234:2345 /tmp/f && /bin/busybox chmod 2750 /tmp/f && echo wrote; "+
			"/bin/busybox mknod /dev/guestnull c 1 3 && echo guest-mknod-ok; "+
			"/bin/busybox mknod /tmp/blk b 8 0 || echo share-mknod-refused")
	tasks := biA.Tasks()
	if _, err := tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c", Bundle: bd, Stdout: out.path, Stderr: errOut.path}); err != nil {
		t.Fatalf("create: %v (console %s)", err, biA.(*vmbackend.Instance).ConsoleLog())
	}
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	w, err := tasks.Wait(ctx, &taskAPI.WaitRequest{ID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if w.ExitStatus != 0 || !strings.Contains(got, "wrote\n") {
		t.Fatalf("container exit %d, output %q, errors %q: writing and chowning through 9p failed", w.ExitStatus, got, errOut.String())
	}
	if !strings.Contains(got, "guest-mknod-ok") {
		t.Fatalf("output %q: the container cannot mknod even in its own /dev, so the share check below proves nothing", got)
	}
	if !strings.Contains(got, "share-mknod-refused") {
		t.Errorf("output %q: a device node was created in the host directory", got)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(root, "tmp", "f"), &st); err != nil || st.Uid != 1234 || st.Gid != 2345 || st.Mode&0o7777 != 0o2750 {
		t.Errorf("file written by the guest: %+v %v, want owner 1234:2345 mode 02750", st, err)
	}
	if _, err := os.Lstat(filepath.Join(root, "tmp", "blk")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("device node in the host rootfs: %v", err)
	}
}

// TestVMMConfinedBlock runs a workload in rootfs_mode block and checks its
// QEMU while the container runs: confined like a 9p one but with the
// block capability set only, and the share read-only in its mount
// namespace.
func TestVMMConfinedBlock(t *testing.T) {
	a, ctx := vmTest(t, 3*time.Minute)
	cfg := qemuConfig(t, a)
	cfg.RootfsMode = vm.ShareBlock
	state := t.TempDir()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := runWorkload(runCtx, cfg, state, busyboxRootfs(t), "",
			[]string{"/bin/sh", "-c", "echo ready; exec sleep 120"}, []string{"PATH=/bin"}, nil, pw, io.Discard)
		pw.CloseWithError(err)
		done <- err
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("workload did not start: %q %v", line, err)
	}
	go io.Copy(io.Discard, pr)
	pids := qemuPids(state)
	if len(pids) != 1 {
		t.Fatalf("qemu processes for %s: %v", state, pids)
	}
	pid := pids[0]
	checkConfined(t, pid, vm.ShareBlock, []string{state}, nil)
	mi, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	ro := false
	for _, l := range strings.Split(string(mi), "\n") {
		f := strings.Fields(l)
		if len(f) > 5 && strings.HasSuffix(f[4], "/sandbox/shared") {
			ro = strings.HasPrefix(f[5], "ro,")
		}
	}
	if !ro {
		t.Errorf("the share is not mounted read-only in QEMU's namespace:\n%s", mi)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("runWorkload after cancel: %v", err)
	}
	if got := qemuPids(state); len(got) != 0 {
		t.Errorf("qemu left: %v", got)
	}
}
