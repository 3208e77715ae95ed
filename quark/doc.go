// Package quark is where a "quark" sandbox backend would live. It holds no
// implementation, on purpose.
//
// Quark (github.com/QuarkContainer/Quark) runs containers on its own
// hypervisor-like runtime: a "qvisor" process hosting a Rust guest kernel
// ("qkernel") that needs KVM. Kuasar's Quark sandboxer starts one qvisor
// per pod and forwards the Task API to it.
//
// Neither Quark's binaries nor a build of them can be obtained here (no
// package in Debian, no release artifacts reachable from this machine's
// network, and its build needs a nightly Rust toolchain plus working KVM,
// which this host does not offer: its KVM is nested through PVM). Rather
// than ship a fake that pretends to isolate, kuasar-go leaves "quark"
// unimplemented: a pod asking for kuasar.io/isolation=quark is refused by
// the sandboxer with a clear NotImplemented error.
//
// What the backend would do, given Quark: implement backend.Backend with
// Name "quark"; Start would launch `quark sandbox` (qvisor) for the pod
// with its state directory and a Task API socket, wait for that socket,
// and return an Instance whose Tasks() is a ttrpc client of it (Quark
// speaks the containerd shim Task API itself, so no guest agent or stdio
// pumps are needed); Pid is the qvisor's pid, Metrics read its
// /proc/PID/status and stat like the VM backend, Recover re-attaches by
// pid and socket, and Stop/Shutdown kill the qvisor and remove its state.
package quark
