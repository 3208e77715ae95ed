package main

import (
	"context"
	"fmt"

	"github.com/containerd/log"

	"github.com/kuasar-go/kuasar/sandboxer"
	"github.com/kuasar-go/kuasar/sandboxer/config"
	"github.com/kuasar-go/kuasar/task/events"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
	"github.com/kuasar-go/kuasar/wasm/wasmbackend"
	"github.com/kuasar-go/kuasar/wasm/wasmedge"
)

// backends builds the sandbox kinds this binary runs ("wasm" in-process,
// "vm" micro-VMs) and returns a function that releases them. The VM backend
// only checks its hypervisor files when a VM sandbox starts, so a host
// without QEMU or a guest kernel still serves Wasm pods.
func backends(ctx context.Context, cfg *config.Config) ([]sandboxer.Option, func(), error) {
	if cfg.Wasm.Engine == wasmedge.EngineName && !wasmedge.Built {
		return nil, nil, fmt.Errorf("wasm.engine %q: %w", cfg.Wasm.Engine, wasmedge.ErrNotBuilt)
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
		wasmbackend.WithDefaultEngine(cfg.Wasm.Engine),
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
