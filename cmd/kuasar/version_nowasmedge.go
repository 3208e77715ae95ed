//go:build !wasmedge

package main

// wasmedgeVersion reports that this build has no WasmEdge engine, and how to
// get one.
func wasmedgeVersion() engineVersion {
	return engineVersion{Name: "wasmedge", Note: "build with -tags wasmedge: make wasmedge"}
}
