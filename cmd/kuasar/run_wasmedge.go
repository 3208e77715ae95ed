//go:build wasmedge

package main

import (
	"context"

	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wasmedge"
)

// Builds with -tags wasmedge offer --engine wasmedge.
func init() {
	engineFactories[wasmedge.EngineName] = func(ctx context.Context, _ string) (wasm.Engine, error) {
		return wasmedge.New(ctx)
	}
}
