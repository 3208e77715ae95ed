// Package images turns a reference (a .wasm file, an OCI image layout, an OCI
// archive or a registry reference) into a runnable Workload, keeping the
// content it fetched in a local content-addressed store.
//
// It also reads the isolation metadata that the sandboxer routes on: image and
// manifest annotations kuasar.io/isolation and kuasar.io/hypervisor, and
// whether the image is Wasm at all.
package images

import (
	"github.com/opencontainers/go-digest"
)

// Annotation keys that images (and pods) use to ask for a sandbox kind.
const (
	// AnnotationIsolation asks for a sandbox kind: "wasm", "vm" or "quark".
	AnnotationIsolation = "kuasar.io/isolation"
	// AnnotationHypervisor names the hypervisor for "vm" isolation
	// ("qemu", "cloud-hypervisor", "stratovirt").
	AnnotationHypervisor = "kuasar.io/hypervisor"
	// AnnotationWasmVariant is what crun/WasmEdge "compat" images carry
	// ("compat" or "compat-smart").
	AnnotationWasmVariant = "module.wasm.image/variant"
)

// Isolation is the kind of sandbox a workload runs in.
type Isolation string

// The sandbox kinds kuasar-go knows.
const (
	// IsolationAuto lets image metadata decide.
	IsolationAuto Isolation = ""
	// IsolationWasm runs the module in-process on a Wasm engine.
	IsolationWasm Isolation = "wasm"
	// IsolationVM runs the workload in a micro-VM with a guest agent.
	IsolationVM Isolation = "vm"
	// IsolationQuark runs the workload in a Quark sandbox.
	IsolationQuark Isolation = "quark"
)

// Kind says what an image holds.
type Kind string

// The image kinds.
const (
	// KindWasm is an image whose workload is a WebAssembly module.
	KindWasm Kind = "wasm"
	// KindLinux is an ordinary Linux container image; it needs VM isolation.
	KindLinux Kind = "linux"
)

// Metadata is what the sandboxer's router needs to know about an image.
type Metadata struct {
	// Kind says whether the image is Wasm or Linux.
	Kind Kind
	// Isolation is the kind the image asks for (from kuasar.io/isolation),
	// or IsolationAuto when it asks for none.
	Isolation Isolation
	// Hypervisor is the hypervisor the image asks for, if any.
	Hypervisor string
	// Annotations are the manifest's and image config's annotations and
	// labels merged, the manifest's winning.
	Annotations map[string]string
}

// Workload is a resolved image, ready to run.
type Workload struct {
	// Reference is the name the workload was resolved from.
	Reference string
	// ManifestDigest is the digest of the image manifest; empty for a bare
	// .wasm file.
	ManifestDigest digest.Digest
	// Metadata is the routing metadata.
	Metadata Metadata

	// Module holds the Wasm module bytes (KindWasm only).
	Module []byte
	// ModuleDigest is the sha256 digest of Module.
	ModuleDigest digest.Digest
	// Function is the exported function to start ("" for _start), from an
	// entrypoint written path#function.
	Function string

	// Rootfs is the directory the image's tar layers were unpacked into
	// (plain and Linux images), or "" when the image has no tar layers.
	Rootfs string

	// Args is the image's default argv: Entrypoint followed by Cmd. For Wasm
	// images Args[0] names the module (path#function allowed).
	Args []string
	// Entrypoint is the image config's Entrypoint alone (a prefix of Args),
	// so that user arguments can replace Cmd and keep it, as docker run does.
	Entrypoint []string
	// Env is the image's default environment, KEY=VALUE.
	Env []string
	// WorkingDir is the image's working directory ("" for "/").
	WorkingDir string
}
