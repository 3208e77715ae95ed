package testenv

import (
	"runtime"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func imageConfig(entrypoint []string) ocispec.ImageConfig {
	return ocispec.ImageConfig{Entrypoint: entrypoint}
}

func platformHost() ocispec.Platform {
	return ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
}
