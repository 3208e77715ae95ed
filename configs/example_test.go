package configs_test

import (
	"fmt"
	"sort"

	"github.com/BurntSushi/toml"

	"github.com/kuasar-go/kuasar/configs"
)

// The binaries carry their default configuration, so kuasar-sandboxer runs
// without /etc/kuasar/config.toml (a file there overrides it key by key).
// Its runtime handlers are the names containerd's snippet registers.
func Example() {
	var def struct {
		RuntimeHandlers map[string]toml.Primitive `toml:"runtime_handlers"`
	}
	if _, err := toml.Decode(string(configs.SandboxerDefault), &def); err != nil {
		panic(err)
	}
	var names []string
	for n := range def.RuntimeHandlers {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Println(names)
	// Output: [kuasar kuasar-vm]
}
