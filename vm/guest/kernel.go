package guest

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
)

var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

// ExtractVmlinux finds the xz stream inside a bzImage (Debian's vmlinuz)
// and decompresses it (with the xz tool) to the ELF vmlinux it holds. It
// checks that the result is an ELF with a PVH entry note, which QEMU's
// microvm and Cloud Hypervisor need to boot it directly.
func ExtractVmlinux(bzImage []byte) ([]byte, error) {
	off := 0
	for {
		i := bytes.Index(bzImage[off:], xzMagic)
		if i < 0 {
			return nil, fmt.Errorf("no xz-compressed kernel found in the image (only xz kernels are supported): %w", errdefs.ErrNotImplemented)
		}
		off += i
		cmd := exec.Command("xz", "-dc", "--single-stream")
		cmd.Stdin = bytes.NewReader(bzImage[off:])
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err == nil && bytes.HasPrefix(out.Bytes(), []byte("\x7fELF")) {
			if err := CheckPVH(out.Bytes()); err != nil {
				return nil, err
			}
			return out.Bytes(), nil
		}
		off++
	}
}

// CheckPVH verifies that an ELF kernel carries the Xen PVH entry note
// (XEN_ELFNOTE_PHYS32_ENTRY).
func CheckPVH(vmlinux []byte) error {
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		return fmt.Errorf("kernel is not an ELF: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			continue
		}
		for len(b) >= 12 {
			nsz := binary.LittleEndian.Uint32(b[0:])
			dsz := binary.LittleEndian.Uint32(b[4:])
			typ := binary.LittleEndian.Uint32(b[8:])
			name := b[12:]
			al := func(n uint32) uint32 { return (n + 3) &^ 3 }
			if uint32(len(name)) < al(nsz)+al(dsz) {
				break
			}
			if typ == 18 && strings.TrimRight(string(name[:nsz]), "\x00") == "Xen" {
				return nil
			}
			b = b[12+al(nsz)+al(dsz):]
		}
	}
	return fmt.Errorf("kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): use machine = \"q35\" with a bzImage: %w", errdefs.ErrInvalidArgument)
}

// Module is one kernel module prepared for the initramfs.
type Module struct {
	// Name is the module name (file name without .ko).
	Name string
	// Data is the uncompressed module, signature stripped.
	Data []byte
}

// ResolveModules finds the named modules and their dependencies (from each
// module's .modinfo "depends=") under modDir (lib/modules/<release>), and
// returns them in load order (dependencies first).
func ResolveModules(modDir string, names []string) ([]Module, error) {
	index := map[string]string{}
	err := filepath.WalkDir(modDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		base := d.Name()
		for _, ext := range []string{".ko", ".ko.xz", ".ko.zst"} {
			if strings.HasSuffix(base, ext) {
				n := strings.TrimSuffix(base, ext)
				index[n] = p
				index[strings.ReplaceAll(n, "-", "_")] = p
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var order []Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(n string) error
	visit = func(n string) error {
		n = strings.ReplaceAll(n, "-", "_")
		switch state[n] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s: %w", n, errdefs.ErrInvalidArgument)
		case 2:
			return nil
		}
		state[n] = 1
		p, ok := index[n]
		if !ok {
			return fmt.Errorf("kernel module %q not found under %s (is it built in, or misspelled?): %w", n, modDir, errdefs.ErrNotFound)
		}
		data, err := readModule(p)
		if err != nil {
			return err
		}
		deps, err := moduleDepends(data)
		if err != nil {
			return fmt.Errorf("module %s: %w", p, err)
		}
		sort.Strings(deps)
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[n] = 2
		order = append(order, Module{Name: strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(filepath.Base(p), ".xz"), ".zst"), ".ko"), Data: StripSignature(data)})
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func readModule(p string) ([]byte, error) {
	switch {
	case strings.HasSuffix(p, ".xz"):
		return exec.Command("xz", "-dc", p).Output()
	case strings.HasSuffix(p, ".zst"):
		return exec.Command("zstd", "-dcq", p).Output()
	}
	return os.ReadFile(p)
}

func moduleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	s := f.Section(".modinfo")
	if s == nil {
		return nil, nil
	}
	b, err := s.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, d)
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}

var sigMagic = []byte("~Module signature appended~\n")

// StripSignature removes an appended module signature, if any. The guest
// kernel then loads the module without spending time verifying it (it is
// tainted as unsigned; CONFIG_MODULE_SIG_FORCE is off in Debian's kernel).
func StripSignature(ko []byte) []byte {
	if !bytes.HasSuffix(ko, sigMagic) {
		return ko
	}
	end := len(ko) - len(sigMagic)
	if end < 12 {
		return ko
	}
	// struct module_signature: algo, hash, id_type, signer_len, key_id_len, pad[3], sig_len (be32)
	sigLen := int(binary.BigEndian.Uint32(ko[end-4 : end]))
	cut := end - 12 - sigLen
	if cut <= 0 {
		return ko
	}
	return ko[:cut]
}
