// Package wasmedge implements wasm.Engine on WasmEdge (through WasmEdge-go
// v0.14 and cgo) for builds that ask for it with the build tag "wasmedge".
//
// It is never part of the default build: it needs libwasmedge 0.14 and its
// headers at build and run time. Build with
//
//	go build -tags wasmedge ./cmd/kuasar
//
// and select it with `kuasar run --engine wasmedge`.
//
// Limits compared with the wazero engine: WasmEdge's WASI writes to the
// process's own file descriptors 0, 1 and 2, so RunConfig.Stdin, Stdout and
// Stderr must be nil or the process's os.Stdin, os.Stdout and os.Stderr;
// there is no disk compilation cache (AOT compilation is a separate step).
package wasmedge
