package main

// This file is the seam between `kuasar run` and the image store: bare .wasm
// files are read here, everything else goes through images.Store.

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

// resolveTarget turns the TARGET of `kuasar run` into a workload: a .wasm
// file (recognised by its \0asm header; path#function picks an export), an
// OCI layout directory, an OCI archive (PATH or PATH:NAME) or a registry
// reference, the last three through the image store under
// env.stateDir/images (registry images are pulled when the store lacks them,
// under the registry timeouts and layer limits of o).
func resolveTarget(ctx context.Context, env *cliEnv, o *runOptions) (*images.Workload, error) {
	target := o.target
	t, err := images.ParseTarget(target)
	if err != nil {
		// path.wasm#function: the file exists without the suffix.
		if file, fn := runspec.SplitFunction(target); fn != "" {
			if st, serr := os.Stat(file); serr == nil && !st.IsDir() {
				return resolveWasmFile(target)
			}
		}
		return nil, err
	}
	if t.Kind == images.SourceWasmFile {
		return resolveWasmFile(target)
	}
	limitOpts, err := o.images.options()
	if err != nil {
		return nil, err
	}
	s, err := openImageStore(env)
	if err != nil {
		return nil, err
	}
	opts := append([]images.Option{images.WithPlainHTTP(o.plainHTTP), images.WithProgress(progressWriter(env))}, limitOpts...)
	return s.Resolve(ctx, target, opts...)
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
			return nil, fmt.Errorf("%s: no such file: %w", file, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("read %s: %w: %w", file, err, errdefs.ErrInvalidArgument)
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
