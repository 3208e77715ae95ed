package wasmbin

import (
	"testing"

	"github.com/kuasar-go/kuasar/internal/fixtures"
)

func TestMinMemoryPages(t *testing.T) {
	tests := []struct {
		name   string
		module []byte
		pages  uint32
		ok     bool
		err    bool
	}{
		{"bigmem", fixtures.BigMem, fixtures.BigMemPages, true, false},
		{"loop", fixtures.Loop, 1, true, false},
		{"hello", fixtures.Hello, 2, true, false},
		// (module (import "env" "mem" (memory 3)))
		{"imported", []byte("\x00asm\x01\x00\x00\x00\x02\x0c\x01\x03env\x03mem\x02\x00\x03"), 3, true, false},
		// (module (func)) has no memory
		{"no memory", []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00\x0a\x04\x01\x02\x00\x0b"), 0, false, false},
		{"cut in a section", fixtures.Hello[:12], 0, false, true},
		{"short", []byte("\x00asm"), 0, false, true},
	}
	for _, tc := range tests {
		pages, ok, err := MinMemoryPages(tc.module)
		if (err != nil) != tc.err {
			t.Errorf("%s: err = %v, want error %v", tc.name, err, tc.err)
			continue
		}
		if tc.err {
			continue
		}
		if ok != tc.ok || (tc.name != "hello" && pages != tc.pages) || (tc.name == "hello" && pages < tc.pages) {
			t.Errorf("%s: MinMemoryPages = %d, %v; want %d, %v", tc.name, pages, ok, tc.pages, tc.ok)
		}
	}
}
