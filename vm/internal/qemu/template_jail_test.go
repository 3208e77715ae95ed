package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/template"
)

// TestCloneJailSpec: a clone's QEMU gets no path to its template (no
// bind of the memory file or the template's directory), inherits the
// sealed memory as its first extra file and opens it as
// /proc/self/fd/N with a private mapping (N after the jail's lease and
// status pipe, or right after stderr without a jail); the builder of a
// template writes its memory file through a writable bind.
func TestCloneJailSpec(t *testing.T) {
	store := template.NewStore(t.TempDir(), t.TempDir())
	key := template.Key{VMM: vm.QEMU, MemoryMB: 1}
	tpl, err := store.Get(context.Background(), key, func(_ context.Context, k template.Key, mem, state string) error {
		if err := os.Truncate(mem, int64(k.MemoryMB)<<20); err != nil {
			return err
		}
		return os.WriteFile(state, []byte("state"), 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tpl.Close()
	dir := t.TempDir()
	spec := vm.Spec{ID: "c", StateDir: filepath.Join(dir, "vm"), SharedDir: filepath.Join(dir, "shared"),
		Config: vm.Config{Path: "/bin/true", Kernel: "/bin/sh", Initramfs: "/bin/ls"}}
	for _, jailed := range []bool{true, false} {
		v, err := New(spec)
		if err != nil {
			t.Fatal(err)
		}
		if v.tpl, err = cloneMode(tpl, jailed); err != nil {
			t.Fatal(err)
		}
		for _, b := range v.Jail(AccelTCG).Binds {
			if b.Path == tpl.MemPath || strings.HasPrefix(b.Path, filepath.Dir(tpl.MemPath)) || strings.HasPrefix(b.Path, tpl.Dir) {
				t.Errorf("jailed %v: clone's jail binds the template's %s", jailed, b.Path)
			}
		}
		if f := v.inherited(); len(f) != 1 || f[0] != tpl.Memory() {
			t.Errorf("jailed %v: inherited files %v, want the sealed memory", jailed, f)
		}
		fd := "5"
		if !jailed {
			fd = "3"
		}
		if args := strings.Join(v.Args(AccelTCG), " "); !strings.Contains(args, "mem-path=/proc/self/fd/"+fd+",share=off") || !strings.Contains(args, "-incoming defer") {
			t.Errorf("jailed %v: command line %s, want the memory from fd %s, private, incoming", jailed, args, fd)
		}
	}
	if _, err := cloneMode(&template.Template{Dir: "x"}, true); err == nil {
		t.Error("a template without sealed memory was accepted")
	}

	b, _ := New(spec)
	b.tpl = &tplMode{mem: tpl.MemPath + ".build", share: true}
	found := false
	for _, bd := range b.Jail(AccelTCG).Binds {
		if bd.Path == b.tpl.mem && bd.Writable {
			found = true
		}
	}
	if !found {
		t.Error("the template builder's memory file is not bound writable")
	}
	if len(b.inherited()) != 0 {
		t.Error("the builder inherits files")
	}
}
