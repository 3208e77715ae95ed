// Package configs holds kuasar-go's shipped configuration files and embeds the
// sandboxer's default configuration so that the binary runs without one.
package configs

import _ "embed"

// SandboxerDefault is configs/config.toml: the kuasar-sandboxer defaults, used
// when /etc/kuasar/config.toml is absent and as the base every file overrides.
//
//go:embed config.toml
var SandboxerDefault []byte

// ContainerdSnippet is configs/containerd-config.toml: the containerd
// configuration that plugs the sandboxer in (the integration tests start
// containerd with it).
//
//go:embed containerd-config.toml
var ContainerdSnippet []byte
