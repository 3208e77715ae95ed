// Package jailhelper exposes the VMM jail and namespace helpers (built
// in vm/internal/vmm) to cmd/kuasar-vmm-jail, the small dedicated binary
// the sandboxer and the CLI run to confine each VMM instead of
// re-executing themselves. It imports nothing else, so the helper binary
// starts in a few milliseconds.
package jailhelper

import "github.com/kuasar-go/kuasar/vm/internal/vmm"

// Main runs the helper that os.Args[0] names (vmm.JailArg0 or
// vmm.NSArg0) and does not return then; it returns when argv[0] names
// neither (the binary was started by hand).
func Main() { vmm.HelperMain() }

// Name is the helper binary's file name; the sandboxer and the CLI use
// it when it lies next to them.
const Name = vmm.HelperName
