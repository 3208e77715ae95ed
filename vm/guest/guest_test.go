package guest_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/vm/guest"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
)

// TestCPIOReadByCpioTool writes an archive and lists/extracts it with GNU
// cpio, an independent reader of the newc format.
func TestCPIOReadByCpioTool(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Fatalf("cpio not installed (apt-get install cpio; run make deps): %v", err)
	}
	var buf bytes.Buffer
	w := guest.NewCPIOWriter(&buf)
	w.Dir("etc", 0o755)
	w.File("etc/a.txt", 0o644, []byte("hello"))
	w.File("odd", 0o755, []byte("123")) // needs padding
	w.Symlink("link", "etc/a.txt")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d not 4-aligned", buf.Len())
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-idm", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	for name, want := range map[string]string{"etc/a.txt": "hello", "odd": "123", "link": "hello"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q %v, want %q", name, b, err, want)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, "odd")); fi == nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("odd mode %v, want 0755", fi)
	}
	if fi, _ := os.Lstat(filepath.Join(dir, "link")); fi == nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Error("link is not a symlink")
	}
}

func TestStripSignature(t *testing.T) {
	body := []byte("\x7fELF module body")
	sig := bytes.Repeat([]byte{0xAB}, 300)
	info := make([]byte, 12)
	binary.BigEndian.PutUint32(info[8:], uint32(len(sig)))
	signed := append(append(append(append([]byte{}, body...), sig...), info...), "~Module signature appended~\n"...)
	if got := guest.StripSignature(signed); !bytes.Equal(got, body) {
		t.Errorf("stripped %q, want %q", got, body)
	}
	if got := guest.StripSignature(body); !bytes.Equal(got, body) {
		t.Error("unsigned module changed")
	}
}

// TestBuildRealKernel builds from Debian's kernel package (cached) and
// checks the artifacts: a PVH vmlinux, the modules in dependency order,
// modules.load, /init.
func TestBuildRealKernel(t *testing.T) {
	testenv.RequireRoot(t)
	a := testenv.BusyboxInit(t, "true")
	vml, err := os.ReadFile(a.Kernel)
	if err != nil {
		t.Fatal(err)
	}
	if err := guest.CheckPVH(vml); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a.KernelRelease, "6.") {
		t.Errorf("kernel release %q", a.KernelRelease)
	}
	full := testenv.Build(t, guest.Options{Init: []byte("#!/bin/sh\n"), Modules: guest.DefaultModules})
	pos := map[string]int{}
	for i, m := range full.Modules {
		pos[m] = i
	}
	for _, dep := range [][2]string{{"virtio", "virtio_mmio"}, {"virtio_ring", "virtio_console"}, {"9pnet", "9pnet_virtio"}, {"netfs", "9p"}, {"fscache", "9p"}, {"vsock", "vmw_vsock_virtio_transport"}, {"virtio", "virtio_blk"}, {"crc32c_generic", "libcrc32c"}, {"libcrc32c", "erofs"}, {"overlay", "overlay"}} {
		a, aok := pos[dep[0]]
		b, bok := pos[dep[1]]
		if !aok || !bok || a > b {
			t.Errorf("module order %v: %s must come before %s", full.Modules, dep[0], dep[1])
		}
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-idm", "--quiet")
	cmd.Dir = dir
	f, _ := os.Open(full.Initramfs)
	defer f.Close()
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v %s", err, out)
	}
	load, _ := os.ReadFile(filepath.Join(dir, "etc/kuasar/modules.load"))
	lines := strings.Fields(string(load))
	if len(lines) != len(full.Modules) || lines[0] != full.Modules[0]+".ko" {
		t.Errorf("modules.load %q vs %v", lines, full.Modules)
	}
	for _, l := range lines {
		b, err := os.ReadFile(filepath.Join(dir, "lib/modules", l))
		if err != nil || !bytes.HasPrefix(b, []byte("\x7fELF")) || bytes.HasSuffix(b, []byte("~Module signature appended~\n")) {
			t.Errorf("module %s: unreadable, not ELF or still signed (%v)", l, err)
		}
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp"} {
		if fi, err := os.Stat(filepath.Join(dir, d)); err != nil || !fi.IsDir() {
			t.Errorf("/%s missing", d)
		}
	}
	// A second build is a cache hit.
	again := testenv.Build(t, guest.Options{Init: []byte("#!/bin/sh\n"), Modules: guest.DefaultModules})
	if !again.Cached || again.Dir != full.Dir {
		t.Errorf("rebuild not cached: %+v", again)
	}
}

func TestPrune(t *testing.T) {
	base := t.TempDir()
	for i, n := range []string{"v1", "v2", "v3", "v4"} {
		d := filepath.Join(base, n)
		os.MkdirAll(d, 0o755)
		m := filepath.Join(d, "manifest.json")
		os.WriteFile(m, []byte("{}"), 0o644)
		ts := time.Unix(int64(1000+i), 0)
		os.Chtimes(m, ts, ts)
	}
	os.MkdirAll(filepath.Join(base, "not-a-version"), 0o755)
	if err := guest.Prune(base, 2, filepath.Join(base, "v1")); err != nil {
		t.Fatal(err)
	}
	var left []string
	ents, _ := os.ReadDir(base)
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if got := strings.Join(left, ","); got != "not-a-version,v1,v3,v4" {
		t.Errorf("left %s, want not-a-version,v1,v3,v4 (newest two + protected)", got)
	}
}
