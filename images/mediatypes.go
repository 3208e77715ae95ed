package images

// Media types of the Wasm image shapes kuasar-go accepts (see docs/images.md).
const (
	// MediaTypeWasmLayer is the layer media type of a raw Wasm module, used by
	// the CNCF Wasm artifact and by images with Wasm layers.
	MediaTypeWasmLayer = "application/wasm"
	// MediaTypeWasmComponentLayer is the layer media type of a Wasm component
	// (Bytecode Alliance wasm-pkg tooling).
	MediaTypeWasmComponentLayer = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"
	// MediaTypeWasmContentLayerV1 is the layer media type written by the
	// older wasm-to-oci tool.
	MediaTypeWasmContentLayerV1 = "application/vnd.wasm.content.layer.v1+wasm"
	// MediaTypeWasmConfigV0 is the config media type of the CNCF Wasm artifact.
	MediaTypeWasmConfigV0 = "application/vnd.wasm.config.v0+json"
	// MediaTypeWasmConfigV1 is the config media type written by wasm-to-oci.
	MediaTypeWasmConfigV1 = "application/vnd.wasm.config.v1+json"
)

// Annotations containerd and the OCI image layout use to name images in an
// index.json; kuasar writes both and reads either.
const (
	// annotationContainerdImageName carries the full image name in archives
	// written by and for containerd (ctr images export/import).
	annotationContainerdImageName = "io.containerd.image.name"
	// annotationRefName is the OCI image layout's reference name.
	annotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationTitle is the OCI title annotation, used as a layer file name.
	AnnotationTitle = "org.opencontainers.image.title"
)

// wasmMagic is the first four bytes of every Wasm binary (module or component).
var wasmMagic = []byte("\x00asm")

// isWasm reports whether b starts with the Wasm binary magic "\0asm". It does
// not validate the module: the engine does that when it compiles it.
func isWasm(b []byte) bool {
	return len(b) >= 4 && string(b[:4]) == string(wasmMagic)
}

// isWasmLayer reports whether a layer media type holds a raw Wasm binary.
func isWasmLayer(mediaType string) bool {
	switch mediaType {
	case MediaTypeWasmLayer, MediaTypeWasmComponentLayer, MediaTypeWasmContentLayerV1:
		return true
	}
	return false
}

// isWasmConfig reports whether a config media type marks a Wasm artifact.
func isWasmConfig(mediaType string) bool {
	return mediaType == MediaTypeWasmConfigV0 || mediaType == MediaTypeWasmConfigV1
}
