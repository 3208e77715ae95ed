package main

import (
	"github.com/kuasar-go/kuasar/cmd/internal/backends"
)

// settingResults reports the effective value of every path the sandboxer
// lets a flag move (backends.Config.Settings), with where it comes from:
// the configuration file or the embedded defaults. kuasar-sandboxer's
// flags (--listen, --containerd-address, --wasm-cache-dir, ...) win over
// both; it logs the values it runs with at start-up.
func settingResults(cfg *backends.Config) []checkResult {
	var out []checkResult
	for _, s := range cfg.Settings() {
		v := s.Value
		if v == "" {
			v = `""`
		}
		out = append(out, checkResult{area: s.Key, status: checkOK, detail: v + " (" + s.Source + ")"})
	}
	return out
}
