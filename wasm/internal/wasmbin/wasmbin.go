// Package wasmbin reads the few facts kuasar's engines need straight from a
// WebAssembly binary, where an engine's API does not expose them.
package wasmbin

import (
	"errors"
)

// PageSize is the WebAssembly page size in bytes.
const PageSize = 65536

// MinMemoryPages reads the minimum page count of the module's memory (defined
// or imported) from its binary. ok is false when the module has no memory.
// wazero's API exposes only exported and imported memories, so a module with
// a private memory would otherwise escape the up-front limit check.
func MinMemoryPages(b []byte) (pages uint32, ok bool, err error) {
	if len(b) < 8 {
		return 0, false, errShort
	}
	r := &reader{b: b, off: 8}
	for r.off < len(r.b) {
		id, err := r.byte()
		if err != nil {
			return 0, false, err
		}
		size, err := r.u32()
		if err != nil {
			return 0, false, err
		}
		end := r.off + int(size)
		if end > len(r.b) || end < r.off {
			return 0, false, errShort
		}
		sec := &reader{b: r.b[:end], off: r.off}
		switch id {
		case 2: // import section
			if p, found, err := importedMemory(sec); err != nil || found {
				return p, found, err
			}
		case 5: // memory section
			n, err := sec.u32()
			if err != nil || n == 0 {
				return 0, false, err
			}
			p, _, err := sec.limits()
			return p, err == nil, err
		}
		r.off = end
	}
	return 0, false, nil
}

func importedMemory(r *reader) (uint32, bool, error) {
	n, err := r.u32()
	if err != nil {
		return 0, false, err
	}
	for i := uint32(0); i < n; i++ {
		for j := 0; j < 2; j++ { // module and field names
			l, err := r.u32()
			if err != nil {
				return 0, false, err
			}
			if err := r.skip(int(l)); err != nil {
				return 0, false, err
			}
		}
		kind, err := r.byte()
		if err != nil {
			return 0, false, err
		}
		switch kind {
		case 0: // func: type index
			_, err = r.u32()
		case 1: // table: reftype + limits
			if _, err = r.byte(); err == nil {
				_, _, err = r.limits()
			}
		case 2: // memory
			p, _, err := r.limits()
			return p, err == nil, err
		case 3: // global: valtype + mutability
			err = r.skip(2)
		case 4: // tag: attribute + type index
			if _, err = r.byte(); err == nil {
				_, err = r.u32()
			}
		default:
			return 0, false, errors.New("unknown import kind")
		}
		if err != nil {
			return 0, false, err
		}
	}
	return 0, false, nil
}

var errShort = errors.New("unexpected end of module")

type reader struct {
	b   []byte
	off int
}

func (r *reader) byte() (byte, error) {
	if r.off >= len(r.b) {
		return 0, errShort
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

func (r *reader) skip(n int) error {
	if n < 0 || r.off+n > len(r.b) {
		return errShort
	}
	r.off += n
	return nil
}

// u32 reads an unsigned LEB128 number (memory64 limits are read as u64 and
// truncated; wasm32 is all kuasar runs).
func (r *reader) u32() (uint32, error) {
	var v uint64
	for shift := 0; shift < 64; shift += 7 {
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			if v > 0xffffffff {
				v = 0xffffffff
			}
			return uint32(v), nil
		}
	}
	return 0, errors.New("LEB128 number too long")
}

// limits reads a limits type: flags, min and, when flags&1, max.
func (r *reader) limits() (min uint32, max *uint32, err error) {
	flags, err := r.byte()
	if err != nil {
		return 0, nil, err
	}
	if min, err = r.u32(); err != nil {
		return 0, nil, err
	}
	if flags&1 != 0 {
		m, err := r.u32()
		if err != nil {
			return 0, nil, err
		}
		max = &m
	}
	return min, max, nil
}
