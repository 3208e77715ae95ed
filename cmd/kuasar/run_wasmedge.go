package main

import (
	"context"

	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wasmedge"
)

// --engine wasmedge is always offered: builds without the wasmedge tag
// answer it with wasmedge.ErrNotBuilt, which says how to get one.
func init() {
	engineFactories[wasmedge.EngineName] = func(ctx context.Context, cacheDir string) (wasm.Engine, error) {
		return wasmedge.New(ctx, wasmedge.WithCacheDir(cacheDir))
	}
}
