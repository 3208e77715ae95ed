// Package wasmedge implements wasm.Engine on WasmEdge 0.14 (through
// WasmEdge-go v0.14.0 and cgo) for builds that ask for it with the build tag
// "wasmedge"; `make wasmedge` makes such builds, on this host too (see
// .ci/wasmedge.sh). The default build never includes it and needs no
// libwasmedge.
//
// Compile validates a module and AOT-compiles it to native code once per
// module digest and host (an on-disk cache, written atomically under a lock).
// Every Run starts a child process of the calling process, the same
// executable re-entered through this package's init: WasmEdge's WASI writes
// to the process's own descriptors 0, 1 and 2, so each instance needs a
// process whose stdio is the container's. The child is killed with SIGKILL
// on kill, timeout and context end, and dies with its parent. See
// docs/rationale/wasm.md ("WasmEdge in child processes").
//
// Select it with `kuasar run --engine wasmedge`, the pod annotation
// kuasar.io/wasm-engine: wasmedge, a runtime handler's wasm_engine, or the
// sandboxer's [wasm] engine.
package wasmedge

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// ErrNotBuilt is New's error in builds without the "wasmedge" tag, and what
// callers answer a request for WasmEdge with in such builds.
var ErrNotBuilt = fmt.Errorf("this binary was built without the WasmEdge engine: build it with `make wasmedge` (go build -tags wasmedge; needs libwasmedge 0.14, which `make wasmedge` takes from a Debian 13 root when the host has none) or use the wazero engine: %w", errdefs.ErrNotImplemented)

// EngineName is the engine's Name and the value that selects it.
const EngineName = "wasmedge"
