package qemu_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/qemu"
	"github.com/kuasar-go/kuasar/vm/internal/template"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
)

// attackArg makes the test binary, started by the driver in QEMU's place
// (same jail, uid, capabilities and inherited descriptors), play a guest
// that took over its QEMU: see attackTemplate.
const attackArg = "-kuasar-test-attack-template"

func TestMain(m *testing.M) {
	for i, a := range os.Args {
		if a == attackArg && i+3 < len(os.Args) {
			attackTemplate(os.Args[i+1], os.Args[i+2], os.Args[i+3])
			os.Exit(0)
		}
	}
	os.Exit(m.Run())
}

// attackTemplate tries every way a compromised clone QEMU has to change
// the template's memory: through the memory backend's mem-path (as QEMU
// opens it), through the inherited descriptor, by the template's host
// paths (memFile, stateFile), and writes what each attempt returned
// ("" when it succeeded) as JSON to result.
func attackTemplate(memFile, stateFile, result string) {
	res := map[string]string{}
	note := func(name string, err error) {
		res[name] = ""
		if err != nil {
			res[name] = err.Error()
		}
	}
	memPath := ""
	for _, a := range os.Args {
		if _, rest, ok := strings.Cut(a, "mem-path="); ok {
			memPath, _, _ = strings.Cut(rest, ",")
		}
	}
	res["mem-path"] = memPath
	fd, err := strconv.Atoi(strings.TrimPrefix(memPath, "/proc/self/fd/"))
	if err != nil {
		fd = -1
	}
	var size int64
	if f, err := os.OpenFile(memPath, os.O_RDWR, 0); err != nil {
		note("open mem-path read-write", err)
	} else {
		note("open mem-path read-write", nil)
		fi, _ := f.Stat()
		size = fi.Size()
		_, err = f.WriteAt([]byte("evil"), 0)
		note("write mem-path", err)
		m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err == nil {
			copy(m, "evil")
			unix.Munmap(m)
		}
		note("shared writable mmap", err)
		note("truncate", f.Truncate(0))
		note("punch a hole", unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 1<<20))
		m, err = unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
		if err == nil {
			copy(m, "mine")
			unix.Munmap(m)
		}
		note("private writable mmap", err)
		f.Close()
	}
	_, err = unix.Pwrite(fd, []byte("evil"), 0)
	note("write inherited descriptor", err)
	_, err = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SEAL)
	note("change the seals", err)
	for name, p := range map[string]string{"memory file": memFile, "state file": stateFile, "memory file's directory": filepath.Dir(memFile)} {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil && strings.HasSuffix(name, "directory") {
			f, err = os.Open(p)
		}
		if err == nil {
			f.Close()
		}
		note("open the template's "+name+" by path", err)
	}
	b, _ := json.Marshal(res)
	_ = os.WriteFile(result, b, 0o600)
}

// digest hashes a file's contents.
func digest(t *testing.T, f *os.File) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<40)); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestCloneCannotWriteTemplate builds a template with QEMU, then starts
// in a clone's place (same driver, jail, uid, capabilities and inherited
// sealed memory) a program that tries to rewrite the template: through
// QEMU's mem-path (which opens read-write, as QEMU 7.2 does), the
// inherited descriptor, a shared writable mapping, truncation, hole
// punching, the seals, and the template's files by path. Every attempt
// must be refused and the template's memory unchanged; a real clone
// restored afterwards runs, with its RAM mapped from the sealed memfd and
// no path to the template in its jail.
func TestCloneCannotWriteTemplate(t *testing.T) {
	testenv.RequireRoot(t)
	qemuPath := testenv.QEMU(t) // skips under -short before building a guest
	a := testenv.BusyboxInit(t, `echo "kuasar-task test: serving on ttyS0" > /dev/console
exec /bin/busybox sleep 600`)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := vm.Config{Path: qemuPath, Kernel: a.Kernel, Initramfs: a.Initramfs, KernelParams: []string{"rdinit=/init"}, MemoryMB: 128}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	newVM := func(id, state string, c vm.Config) *qemu.VM {
		t.Helper()
		v, err := qemu.New(vm.Spec{ID: id, StateDir: state, Config: c})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	builder := newVM("tpl", filepath.Join(t.TempDir(), "vm"), cfg)
	key, err := builder.TemplateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	store := template.NewStore(filepath.Join(t.TempDir(), "templates"), t.TempDir())
	t.Cleanup(func() { store.RemoveAll(context.Background()) })
	tpl, err := store.Get(ctx, key, func(ctx context.Context, _ template.Key, mem, state string) error {
		work, err := os.MkdirTemp("", "kuasar-tpl-")
		if err != nil {
			return err
		}
		return builder.BuildTemplate(ctx, work, 2*time.Minute, mem, state)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tpl.Close()
	file, err := os.Open(tpl.MemPath)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	before, sealedBefore := digest(t, file), digest(t, tpl.Memory())
	if before != sealedBefore {
		t.Fatal("the sealed memory differs from the template's memory file")
	}

	// The attacker: this test binary, started by the driver as a clone.
	att := cfg
	att.Path = self
	// It writes its result where its jail lets it: its state directory.
	state := filepath.Join(t.TempDir(), "vm")
	result := filepath.Join(state, "attack.json")
	att.ExtraArgs = []string{attackArg, tpl.MemPath, tpl.StatePath, result}
	av := newVM("attacker", state, att)
	_ = av.StartFromTemplate(ctx, tpl) // it never serves QMP: the start fails once it exits
	res := map[string]string{}
	b, err := os.ReadFile(result)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(state, qemu.VMMLogName))
		t.Fatalf("the attacker left no result (%v); its log:\n%s", err, log)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	t.Logf("attack results: %s", b)
	if !strings.HasPrefix(res["mem-path"], "/proc/self/fd/") {
		t.Fatalf("clone's mem-path %q, want an inherited descriptor", res["mem-path"])
	}
	for _, step := range []struct {
		name, want string // want: "" = must succeed, else a substring of the error
	}{
		{"open mem-path read-write", ""}, // QEMU 7.2 needs this to start
		{"private writable mmap", ""},    // and this is its guest RAM
		{"write mem-path", "operation not permitted"},
		{"shared writable mmap", "operation not permitted"},
		{"truncate", "operation not permitted"},
		{"punch a hole", "operation not permitted"},
		{"write inherited descriptor", "bad file descriptor"}, // handed out read-only
		{"change the seals", ""},
		{"open the template's memory file by path", "no such file or directory"},
		{"open the template's state file by path", "no such file or directory"},
		{"open the template's memory file's directory by path", "no such file or directory"},
	} {
		got, ok := res[step.name]
		switch {
		case !ok:
			t.Errorf("%s: not tried", step.name)
		case step.name == "change the seals":
			if got == "" {
				t.Errorf("%s: allowed", step.name)
			}
		case step.want == "" && got != "":
			t.Errorf("%s: %s, want it to work", step.name, got)
		case step.want != "" && !strings.Contains(got, step.want):
			t.Errorf("%s: %q, want refused with %q", step.name, got, step.want)
		}
	}
	if after := digest(t, file); after != before {
		t.Error("the template's memory file changed")
	}
	if after := digest(t, tpl.Memory()); after != before {
		t.Error("the template's sealed memory changed")
	}

	// A later clone restores and runs, its RAM the sealed memfd.
	clone := newVM("clone", filepath.Join(t.TempDir(), "vm"), cfg)
	if err := clone.StartFromTemplate(ctx, tpl); err != nil {
		t.Fatalf("a clone after the attack: %v", err)
	}
	defer clone.Stop(context.Background(), time.Second)
	if err := clone.Health(ctx); err != nil {
		t.Fatal(err)
	}
	maps, err := os.ReadFile("/proc/" + strconv.Itoa(clone.Pid()) + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(maps), "/memfd:kuasar-vm-template-") || strings.Contains(string(maps), tpl.MemPath) {
		t.Errorf("clone's RAM is not mapped from the sealed memfd:\n%s", maps)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(clone.Pid()) + "/root" + tpl.MemPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the template's memory file is visible in the clone's jail: %v", err)
	}
}
