// Package configs holds kuasar-go's shipped configuration files and embeds the
// sandboxer's default configuration so that the binary runs without one.
package configs

import _ "embed"

// SandboxerDefault is configs/config.toml: the kuasar-sandboxer defaults, used
// when /etc/kuasar/config.toml is absent and as the base every file overrides.
//
//go:embed config.toml
var SandboxerDefault []byte
