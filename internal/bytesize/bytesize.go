// Package bytesize parses the byte sizes users write in flags and in the
// configuration file, with Kubernetes' units (and docker's lower-case ones),
// so that "512Mi" means the same in `kuasar run --memory` and in
// [wasm] default_memory_limit.
package bytesize

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// Parse reads "1048576", "64Ki", "64Mi", "1Gi" (powers of 1024, as
// Kubernetes), "512M", "1G", "100K" (powers of 1000, as Kubernetes), and
// docker's lower-case "512m", "1g", "100k" (powers of 1024). A trailing
// "B"/"b" is allowed. Zero is refused: a size given is a bound. Errors are of
// kind errdefs.ErrInvalidArgument.
func Parse(v string) (uint64, error) {
	s := strings.TrimSuffix(strings.TrimSuffix(v, "B"), "b")
	units := []struct {
		suffix string
		mult   uint64
	}{
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
		{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
		{"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
	}
	mult := uint64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a size: write bytes or a number with Ki, Mi, Gi, K, M or G, e.g. 64Mi: %w", v, errdefs.ErrInvalidArgument)
	}
	if n > (1<<64-1)/mult {
		return 0, fmt.Errorf("%q is too large: %w", v, errdefs.ErrInvalidArgument)
	}
	return n * mult, nil
}
