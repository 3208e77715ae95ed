//go:build !wasmedge

package main

import (
	"strings"
	"testing"
)

// TestEngineWasmEdgeNotBuilt: --engine wasmedge in a build without the
// engine fails as kuasar's own error (125), naming how to get a build.
func TestEngineWasmEdgeNotBuilt(t *testing.T) {
	r := runInProcess(t, t.TempDir(), "", "run", "--engine", "wasmedge", fixture(t, "hello"))
	if r.code != exitKuasarError || !strings.Contains(r.stderr, "make wasmedge") {
		t.Fatalf("kuasar run --engine wasmedge = %d, stderr %q; want %d and the way to a WasmEdge build", r.code, r.stderr, exitKuasarError)
	}
}
