package main

// This file is the seam between `kuasar run` and the image store. Only the
// bare .wasm file branch lives here for now; the images package replaces
// resolveTarget with one that also accepts OCI layouts, archives and
// registry references. Keep the signature.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/wasm/runspec"
)

// resolveTarget turns the TARGET of `kuasar run` into a workload.
//
// REPLACE ME (images): today only a path to a .wasm file (optionally
// path#function) is understood; plainHTTP is unused until registries are.
func resolveTarget(ctx context.Context, env *cliEnv, target string, plainHTTP bool) (*images.Workload, error) {
	_, _, _ = ctx, env, plainHTTP
	return resolveWasmFile(target)
}

// resolveWasmFile reads a .wasm file named by target ("path" or
// "path#function") into a workload whose argv[0] is the file's base name,
// as wazero's own CLI does.
func resolveWasmFile(target string) (*images.Workload, error) {
	file, function := target, ""
	if _, err := os.Stat(target); errors.Is(err, fs.ErrNotExist) {
		file, function = runspec.SplitFunction(target)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such file (this build runs .wasm files only; OCI images and registries come with the image store): %w", file, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("read %s: %v: %w", file, err, errdefs.ErrInvalidArgument)
	}
	if !bytes.HasPrefix(b, []byte("\x00asm")) {
		return nil, fmt.Errorf("%s is not a WebAssembly module (no \\0asm header): pass a .wasm file: %w", file, errdefs.ErrInvalidArgument)
	}
	return &images.Workload{
		Reference:    target,
		Metadata:     images.Metadata{Kind: images.KindWasm, Isolation: images.IsolationAuto},
		Module:       b,
		ModuleDigest: digest.FromBytes(b),
		Function:     function,
		Args:         []string{filepath.Base(file)},
	}, nil
}
