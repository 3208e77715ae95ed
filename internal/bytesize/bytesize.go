// Package bytesize parses the byte sizes users write in flags and in the
// configuration file, with Kubernetes' units, so that "512Mi" means the same
// in `kuasar run --memory` and in [wasm] default_memory_limit.
//
// Ki, Mi, Gi, Ti are powers of 1024 and K (or k), M, G, T powers of 1000,
// as Kubernetes reads them (and docker's go-units FromHumanSize). Docker's
// --memory (go-units RAMInBytes) reads M as MiB instead; kuasar follows
// Kubernetes because its sandboxes serve Kubernetes pods, whose limits are
// written that way, and because only that reading can say both 64 MiB (64Mi)
// and 64 MB (64M). The lower-case m, g and t are refused rather than guessed:
// docker reads 512m as 512 MiB, Kubernetes as 0.512 bytes (milli).
package bytesize

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// units are the suffixes Parse accepts, longest first.
var units = []struct {
	suffix string
	mult   uint64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"K", 1e3}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
}

// Parse reads "1048576", "64Ki", "64Mi", "1Gi", "1Ti" (powers of 1024) and
// "100K" or "100k", "512M", "1G", "1T" (powers of 1000), with an optional
// trailing "B" ("64MiB", "512MB"). Lower-case "m", "g" and "t" are refused
// with the two spellings that say what was meant. Zero is refused: a size
// given is a bound. Errors are of kind errdefs.ErrInvalidArgument.
func Parse(v string) (uint64, error) {
	s := strings.TrimSuffix(v, "B")
	if i := len(s) - 1; i > 0 && strings.ContainsRune("mgt", rune(s[i])) && s[i-1] >= '0' && s[i-1] <= '9' {
		n, u := s[:i], strings.ToUpper(s[i:])
		return 0, fmt.Errorf("%q: a lower-case %q is MiB to docker and milli to Kubernetes: write %s%si (powers of 1024) or %s%s (powers of 1000): %w",
			v, s[i:], n, u, n, u, errdefs.ErrInvalidArgument)
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
		return 0, fmt.Errorf("%q is not a size: write bytes or a number with Ki, Mi, Gi (powers of 1024) or K, M, G (powers of 1000), e.g. 64Mi: %w", v, errdefs.ErrInvalidArgument)
	}
	if n > (1<<64-1)/mult {
		return 0, fmt.Errorf("%q is too large: %w", v, errdefs.ErrInvalidArgument)
	}
	return n * mult, nil
}
