package wazero

import (
	"bytes"
	"os"
	"testing"
)

// TestIsTerminal: only a terminal is a terminal to the guest (the other
// stdio keeps seek and tell rights, so that wasi-libc's isatty() says no).
func TestIsTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for _, tc := range []struct {
		name string
		v    any
	}{{"pipe", w}, {"buffer", &bytes.Buffer{}}, {"nil", nil}, {"file", r}} {
		if isTerminal(tc.v) {
			t.Errorf("%s is taken for a terminal", tc.name)
		}
	}
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	defer ptmx.Close()
	if !isTerminal(ptmx) {
		t.Error("a pseudo-terminal is not taken for a terminal")
	}
}
