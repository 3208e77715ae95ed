package images

// Names the external tests (package images_test) use but no other package
// needs: exported here, in a test-only file, so they stay out of the API.
var (
	LoadImage      = loadImage
	SelectPlatform = selectPlatform
)
