package wazero

import "github.com/kuasar-go/kuasar/wasm"

// OpenFiles gives the external tests the engine's count of open guest
// files; the engine's type is not exported (New returns a wasm.Engine).
func OpenFiles(e wasm.Engine) int { return e.(*engine).OpenFiles() }
