package images

// Names the external tests (package images_test) use but no other package
// needs: exported here, in a test-only file, so they stay out of the API.
var (
	LoadImage      = loadImage
	SelectPlatform = selectPlatform
	BuildIndex     = buildIndex
	TarLayer       = tarLayer
)

// The Wasm media types other than application/wasm, for the shape tests.
const (
	MediaTypeWasmComponentLayer = mediaTypeWasmComponentLayer
	MediaTypeWasmContentLayerV1 = mediaTypeWasmContentLayerV1
	MediaTypeWasmConfigV0       = mediaTypeWasmConfigV0
	MediaTypeWasmConfigV1       = mediaTypeWasmConfigV1
)
