package vmm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/procmark"
	"golang.org/x/sys/unix"
)

// statusField returns a field of /proc/pid/status ("" when missing).
func statusField(t *testing.T, pid int, key string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestJail runs a process in a Jail and checks, from the host, what it
// is left with: its uid and gid, no supplementary groups, exactly the
// capabilities asked for, no_new_privs, and a root that holds only the
// bound paths (a sibling of the bound directory and the host's
// /etc/shadow are not there); and that the host sees no mount of it.
func TestJail(t *testing.T) {
	if !CanJail() {
		t.Skip("the VMM jail needs root")
	}
	base := t.TempDir()
	mine, other := filepath.Join(base, "mine"), filepath.Join(base, "other")
	for _, d := range []string{mine, other, filepath.Join(base, "jail")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(other, "secret"), []byte("x"), 0o600)
	// A state directory may live in /dev/shm, below the jail's own /dev.
	shm, err := os.MkdirTemp("/dev/shm", "kuasar-jail-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(shm)
	uid, lease, err := LeaseUID(2_100_000_000, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Close()
	for _, d := range []string{mine, shm} { // written by the jailed uid
		if err := os.Chown(d, int(uid), int(uid)); err != nil {
			t.Fatal(err)
		}
	}
	j := &Jail{
		Root:     filepath.Join(base, "jail"),
		Binds:    []Bind{{Path: "/usr"}, {Path: mine, Writable: true}, {Path: shm, Writable: true}},
		Symlinks: map[string]string{"/lib": "usr/lib", "/lib64": "usr/lib64", "/bin": "usr/bin"},
		UID:      uid, GID: uid,
		Caps:  []uintptr{unix.CAP_CHOWN, unix.CAP_FOWNER},
		Proc:  true,
		Lease: lease,
	}
	marker := filepath.Join(mine, "ran")
	p, err := StartJailed("/bin/sh", []string{"-c", "echo shm > " + shm + "/ran; echo in-jail > " + marker + ".tmp; ls /proc >> " + marker + ".tmp; mv " + marker + ".tmp " + marker + "; exec sleep 60"}, filepath.Join(base, "log"), j)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := WaitForFile(ctx, p, "jailed shell", marker); err != nil {
		t.Fatal(err)
	}
	// The VMM (exec'd by the helper, same pid) carries its owner's mark
	// and is recorded with its start time, for a restarted sandboxer.
	// The shell may be exec'ing sleep right now, when its environ reads
	// empty: poll until the deadline.
	owner, err := procmark.OwnerOf(p.Pid())
	for err == nil && owner == "" && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
		owner, err = procmark.OwnerOf(p.Pid())
	}
	if err != nil || owner != base {
		t.Errorf("mark of the jailed VMM: %q %v; want %s", owner, err, base)
	}
	if r, err := procmark.Read(RecordPath(filepath.Join(base, "log"))); err != nil || r.Pid != p.Pid() || !procmark.Alive(r.Proc()) {
		t.Errorf("record of the jailed VMM: %+v %v; want pid %d, alive", r, err, p.Pid())
	}
	// The uid is taken while the process holds the lease, even after
	// this process lets go of it.
	lease.Close()
	if u2, l2, err := LeaseUID(uid, 1); err == nil {
		l2.Close()
		t.Errorf("uid %d leased twice (got %d)", uid, u2)
	} else if !errdefs.IsResourceExhausted(err) {
		t.Errorf("second lease: %v, want ResourceExhausted", err)
	}
	id := strconv.FormatUint(uint64(uid), 10)
	for _, tc := range []struct{ key, want string }{
		{"Uid", id + "\t" + id + "\t" + id + "\t" + id},
		{"Gid", id + "\t" + id + "\t" + id + "\t" + id},
		{"Groups", ""},
		{"CapEff", "0000000000000009"},
		{"CapPrm", "0000000000000009"},
		{"CapBnd", "0000000000000009"},
		{"CapAmb", "0000000000000009"},
		{"NoNewPrivs", "1"},
	} {
		if got := statusField(t, p.Pid(), tc.key); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.key, got, tc.want)
		}
	}
	root := "/proc/" + strconv.Itoa(p.Pid()) + "/root"
	b, err := os.ReadFile(root + marker)
	if err != nil || !strings.HasPrefix(string(b), "in-jail\n") {
		t.Fatalf("bound dir in the jail: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(shm, "ran")); err != nil || string(b) != "shm\n" {
		t.Errorf("bind below /dev/shm not writable in the jail: %q %v", b, err)
	}
	// The jailed shell sees its own processes in /proc (itself and ls)
	// and nothing of the host's: no other pid, no system files.
	var pids []string
	for _, e := range strings.Fields(strings.TrimPrefix(string(b), "in-jail\n")) {
		if _, err := strconv.Atoi(e); err == nil {
			pids = append(pids, e)
		} else if e != "self" && e != "thread-self" {
			t.Errorf("the jail's /proc shows %q", e)
		}
	}
	if len(pids) == 0 || len(pids) > 2 || pids[0] != strconv.Itoa(p.Pid()) {
		t.Errorf("the jail's /proc shows pids %v, want the shell %d (and its ls)", pids, p.Pid())
	}
	for _, gone := range []string{"/etc/shadow", other, filepath.Join(other, "secret"), "/proc/sys", "/proc/kcore", "/root", "/var"} {
		if _, err := os.Lstat(root + gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s visible in the jail: %v", gone, err)
		}
	}
	ents, _ := os.ReadDir(root + "/dev")
	var devs []string
	for _, e := range ents {
		devs = append(devs, e.Name())
	}
	if strings.Join(devs, ",") != "null,random,shm,urandom,zero" { // shm: the path to the bind below it
		t.Errorf("jail /dev holds %v", devs)
	}
	if err := os.WriteFile(root+"/usr/jail-write-test", nil, 0o600); err == nil {
		os.Remove("/usr/jail-write-test")
		t.Error("/usr is writable in the jail")
	}
	if m, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(m), base) {
		t.Errorf("jail mounts leaked to the host:\n%s", m)
	}
}

// TestJailFailureReported checks that a jail that cannot be built fails
// StartJailed with the helper's reason and leaves no process.
func TestJailFailureReported(t *testing.T) {
	if !CanJail() {
		t.Skip("the VMM jail needs root")
	}
	base := t.TempDir()
	j := &Jail{Root: filepath.Join(base, "no-such-root"), UID: 2_100_000_100, GID: 2_100_000_100}
	p, err := StartJailed("/bin/true", nil, filepath.Join(base, "log"), j)
	if err == nil {
		p.Kill()
		t.Fatal("jail on a missing root directory started")
	}
	if !strings.Contains(err.Error(), "no-such-root") || !errdefs.IsFailedPrecondition(err) {
		t.Errorf("error %v: want FailedPrecondition naming the root", err)
	}
	if _, err := StartJailed("/bin/true", nil, filepath.Join(base, "log"), &Jail{Root: base}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("uid 0 jail: %v, want InvalidArgument", err)
	}
}

// BenchmarkStart and BenchmarkStartJailed measure what the jail adds to
// starting a VMM: /bin/true started and reaped, plainly or in a Jail like
// QEMU's (the helper's re-exec, namespaces, binds, pivot_root, /proc).
func BenchmarkStart(b *testing.B) { benchStart(b, false) }

// BenchmarkStartJailed: see BenchmarkStart.
func BenchmarkStartJailed(b *testing.B) { benchStart(b, true) }

func benchStart(b *testing.B, jailed bool) {
	if jailed && !CanJail() {
		b.Skip("the VMM jail needs root")
	}
	base := b.TempDir()
	root := filepath.Join(base, "jail")
	os.Mkdir(root, 0o700)
	for i := 0; i < b.N; i++ {
		var p *Process
		var err error
		if jailed {
			p, err = StartJailed("/bin/true", nil, filepath.Join(base, "log"), &Jail{
				Root: root, Binds: []Bind{{Path: "/usr"}, {Path: base, Writable: true}},
				Symlinks: map[string]string{"/lib": "usr/lib", "/lib64": "usr/lib64", "/bin": "usr/bin"},
				UID:      2_100_000_200, GID: 2_100_000_200, Proc: true, Caps: []uintptr{unix.CAP_DAC_OVERRIDE},
			})
		} else {
			p, err = Start("/bin/true", nil, filepath.Join(base, "log"))
		}
		if err != nil {
			b.Fatal(err)
		}
		<-p.Done()
	}
}
