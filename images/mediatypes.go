package images

// Media types of the Wasm image shapes kuasar-go accepts (see docs/images.md).
const (
	// MediaTypeWasmLayer is the layer media type of a raw Wasm module, used by
	// the CNCF Wasm artifact and by images with Wasm layers.
	MediaTypeWasmLayer = "application/wasm"
	// mediaTypeWasmComponentLayer is the layer media type of a Wasm component
	// (Bytecode Alliance wasm-pkg tooling).
	mediaTypeWasmComponentLayer = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"
	// mediaTypeWasmContentLayerV1 is the layer media type written by the
	// older wasm-to-oci tool.
	mediaTypeWasmContentLayerV1 = "application/vnd.wasm.content.layer.v1+wasm"
	// mediaTypeWasmConfigV0 is the config media type of the CNCF Wasm artifact.
	mediaTypeWasmConfigV0 = "application/vnd.wasm.config.v0+json"
	// mediaTypeWasmConfigV1 is the config media type written by wasm-to-oci.
	mediaTypeWasmConfigV1 = "application/vnd.wasm.config.v1+json"
)

// annotationContainerdImageName carries the full image name in archives
// written by and for containerd (ctr images export/import); kuasar writes it
// next to the OCI layout's ocispec.AnnotationRefName and reads either.
const annotationContainerdImageName = "io.containerd.image.name"

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
	case MediaTypeWasmLayer, mediaTypeWasmComponentLayer, mediaTypeWasmContentLayerV1:
		return true
	}
	return false
}

// isWasmConfig reports whether a config media type marks a Wasm artifact.
func isWasmConfig(mediaType string) bool {
	return mediaType == mediaTypeWasmConfigV0 || mediaType == mediaTypeWasmConfigV1
}
