//go:build wasmedge

package main

import "github.com/second-state/WasmEdge-go/wasmedge"

// wasmedgeVersion reports the WasmEdge library this binary is linked with.
func wasmedgeVersion() engineVersion {
	return engineVersion{Name: "wasmedge", Version: wasmedge.GetVersion(), Built: true}
}
