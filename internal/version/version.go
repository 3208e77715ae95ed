// Package version holds the build's version, set by the linker.
package version

// Version is the kuasar-go release, overridden at build time with
// -ldflags "-X github.com/kuasar-go/kuasar/internal/version.Version=v1.2.3".
var Version = "v0.1.0-dev"

// Revision is the git commit the binaries were built from, set like Version.
var Revision = "unknown"
