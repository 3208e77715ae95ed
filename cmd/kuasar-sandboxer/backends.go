package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/containerd/log"

	kbackends "github.com/kuasar-go/kuasar/cmd/internal/backends"
	"github.com/kuasar-go/kuasar/quark"
	"github.com/kuasar-go/kuasar/sandboxer"
	"github.com/kuasar-go/kuasar/task/events"
	"github.com/kuasar-go/kuasar/task/wasmtask/contentstore"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
	"github.com/kuasar-go/kuasar/wasm/wasmbackend"
)

// backends builds the sandbox kinds this binary runs ("wasm" in-process,
// "vm" micro-VMs, "quark") and returns a function that releases them. The
// VM backend only checks its hypervisor files when a VM sandbox starts, and
// the Quark backend's start-up check only logs what is missing (each Quark
// pod then fails with it), so a host without QEMU or Quark still serves
// Wasm pods.
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
	// The template of the default VM sizes is built in the background
	// now, not by the first pod that needs it (docs/vm.md).
	tctx, stopTemplates := context.WithCancel(context.WithoutCancel(ctx))
	templatesDone := make(chan struct{})
	go func() {
		defer close(templatesDone)
		_, err := v.BuildTemplates(tctx)
		switch {
		case err == nil || tctx.Err() != nil:
		case errors.Is(err, fs.ErrNotExist):
			log.G(ctx).WithError(err).Info("vm: no VM template built ahead of time (QEMU or the guest images missing); VM pods fail until they are installed")
		default:
			log.G(ctx).WithError(err).Warn("vm: building the VM template ahead of time failed; the first VM pod boots cold and tries again")
		}
	}()
	closeBackends := closeAll
	closeAll = func() {
		stopTemplates()
		<-templatesDone
		// The warm pool's idle clones go; running VM sandboxes stay.
		if err := v.Close(context.WithoutCancel(ctx)); err != nil {
			log.G(ctx).WithError(err).Warn("close vm backend")
		}
		closeBackends()
	}
	q := quark.New(cfg.Quark, quark.WithPublisher(pub))
	if err := q.Check(); err != nil {
		log.G(ctx).WithError(err).Info("quark backend: pods with kuasar.io/isolation=quark will fail until this is fixed")
	}
	return []sandboxer.Option{sandboxer.WithBackend(w), sandboxer.WithBackend(v), sandboxer.WithBackend(q)}, closeAll, nil
}
