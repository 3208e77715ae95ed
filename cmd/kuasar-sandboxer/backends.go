package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/containerd/log"

	"github.com/kuasar-go/kuasar/sandboxer"
	"github.com/kuasar-go/kuasar/sandboxer/config"
	"github.com/kuasar-go/kuasar/task/events"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
	"github.com/kuasar-go/kuasar/wasm/wasmbackend"
)

// backends builds the sandbox kinds this binary runs ("wasm" in-process,
// "vm" micro-VMs) and returns a function that releases them. The VM backend
// only checks its hypervisor files when a VM sandbox starts, so a host
// without QEMU or a guest kernel still serves Wasm pods.
func backends(ctx context.Context, cfg *config.Config) ([]sandboxer.Option, func(), error) {
	if cfg.Wasm.Engine != "" && cfg.Wasm.Engine != "wazero" {
		return nil, nil, fmt.Errorf("wasm.engine %q is not built into this binary: use \"wazero\"", cfg.Wasm.Engine)
	}
	memLimit, err := cfg.Wasm.MemoryLimitBytes()
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
	w, err := wasmbackend.New(ctx,
		wasmbackend.WithDefaultMemoryLimit(memLimit),
		wasmbackend.WithDefaultOpenFileLimit(cfg.Wasm.DefaultOpenFileLimit),
		wasmbackend.WithOpenFileBudget(fileBudget),
		wasmbackend.WithCacheDir(cfg.Wasm.CacheDir),
		wasmbackend.WithPublisher(pub),
		wasmbackend.WithContainerdAddress(cfg.Sandboxer.ContainerdAddress))
	if err != nil {
		pub.Close()
		return nil, nil, err
	}
	closeAll := func() {
		if err := w.Close(context.WithoutCancel(ctx)); err != nil {
			log.G(ctx).WithError(err).Warn("close wasm backend")
		}
		pub.Close()
	}
	// Both backends publish task events through the one publisher.
	vopts := []vmbackend.Option{vmbackend.WithDefaultHypervisor(cfg.Hypervisor.Default), vmbackend.WithPublisher(pub)}
	if cfg.Sandboxer.StateDir != "" {
		// VM templates live with the sandboxer's state (docs/vm.md).
		vopts = append(vopts, vmbackend.WithTemplateDir(filepath.Join(cfg.Sandboxer.StateDir, "vm-templates")))
	}
	for name, h := range map[string]config.Hypervisor{
		vm.QEMU:            cfg.Hypervisor.QEMU,
		vm.CloudHypervisor: cfg.Hypervisor.CloudHypervisor,
		vm.StratoVirt:      cfg.Hypervisor.StratoVirt,
	} {
		vopts = append(vopts, vmbackend.WithHypervisor(name, h))
	}
	v, err := vmbackend.New(ctx, vopts...)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return []sandboxer.Option{sandboxer.WithBackend(w), sandboxer.WithBackend(v)}, closeAll, nil
}
