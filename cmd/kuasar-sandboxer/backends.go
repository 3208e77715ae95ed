package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/containerd/log"

	kbackends "github.com/kuasar-go/kuasar/cmd/internal/backends"
	"github.com/kuasar-go/kuasar/sandboxer"
	"github.com/kuasar-go/kuasar/task/events"
	"github.com/kuasar-go/kuasar/task/wasmtask/contentstore"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
	"github.com/kuasar-go/kuasar/wasm/wasmbackend"
)

// backends builds the sandbox kinds this binary runs ("wasm" in-process,
// "vm" micro-VMs) and returns a function that releases them. The VM backend
// only checks its hypervisor files when a VM sandbox starts, so a host
// without QEMU or a guest kernel still serves Wasm pods.
func backends(ctx context.Context, cfg *kbackends.Config) ([]sandboxer.Option, func(), error) {
	wopts, err := cfg.Wasm.Options()
	if err != nil {
		return nil, nil, err
	}
	fileBudget, err := openFileBudget(ctx, cfg.Sandboxer.FdReserve)
	if err != nil {
		return nil, nil, err
	}
	pub, err := events.NewRemotePublisher(cfg.Sandboxer.ContainerdTTRPCAddress)
	if err != nil {
		return nil, nil, fmt.Errorf("events publisher for %s: %w", cfg.Sandboxer.ContainerdTTRPCAddress, err)
	}
	// Modules that are no file of their rootfs come from their image's
	// wasm layers in containerd's content store.
	modules := contentstore.New(cfg.Sandboxer.ContainerdAddress)
	w, err := wasmbackend.New(ctx, append(wopts,
		wasmbackend.WithOpenFileBudget(fileBudget),
		wasmbackend.WithPublisher(pub),
		wasmbackend.WithModuleResolver(modules))...)
	if err != nil {
		pub.Close()
		return nil, nil, err
	}
	closeAll := func() {
		if err := w.Close(context.WithoutCancel(ctx)); err != nil {
			log.G(ctx).WithError(err).Warn("close wasm backend")
		}
		if err := modules.Close(); err != nil {
			log.G(ctx).WithError(err).Warn("close the containerd connection of the wasm module resolver")
		}
		pub.Close()
	}
	// Both backends publish task events through the one publisher.
	vopts := append(cfg.VM.Options(), vmbackend.WithPublisher(pub))
	if cfg.Sandboxer.StateDir != "" {
		// VM templates live with the sandboxer's state (docs/vm.md).
		vopts = append(vopts, vmbackend.WithTemplateDir(filepath.Join(cfg.Sandboxer.StateDir, "vm-templates")))
	}
	v, err := vmbackend.New(ctx, vopts...)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return []sandboxer.Option{sandboxer.WithBackend(w), sandboxer.WithBackend(v)}, closeAll, nil
}
