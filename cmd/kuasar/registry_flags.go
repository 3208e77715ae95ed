package main

// Registry timeouts and layer limits shared by pull, run and image build.

import (
	"fmt"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	"github.com/spf13/pflag"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/bytesize"
)

// imageFlags are the flags that bound what a registry and an image may cost:
// how long a registry may keep kuasar waiting, and what one layer may
// expand to.
type imageFlags struct {
	connectTimeout  time.Duration
	timeout         time.Duration
	maxLayerSize    byteSize
	maxLayerEntries int64
	maxLayerRatio   int64
}

// registerTimeouts adds --registry-connect-timeout and --registry-timeout.
func (f *imageFlags) registerTimeouts(fs *pflag.FlagSet) {
	fs.DurationVar(&f.connectTimeout, "registry-connect-timeout", images.DefaultConnectTimeout,
		"longest wait to connect to a registry (DNS and TCP), and separately for its TLS handshake; 0 waits forever")
	fs.DurationVar(&f.timeout, "registry-timeout", images.DefaultResponseTimeout,
		"longest wait for a registry's response to a request, and longest pause in the bytes of a download; 0 waits forever")
}

// register adds the timeout flags and --max-layer-size, --max-layer-entries
// and --max-layer-ratio.
func (f *imageFlags) register(fs *pflag.FlagSet) {
	f.registerTimeouts(fs)
	f.maxLayerSize = byteSize(images.DefaultMaxLayerSize)
	fs.Var(&f.maxLayerSize, "max-layer-size", "refuse an image with a layer larger than this `size` uncompressed: bytes or 512Mi, 16Gi, ...")
	fs.Int64Var(&f.maxLayerEntries, "max-layer-entries", images.DefaultMaxLayerEntries, "refuse an image with a layer of more files, directories and links than this")
	fs.Int64Var(&f.maxLayerRatio, "max-layer-ratio", images.DefaultMaxLayerRatio,
		fmt.Sprintf("refuse an image with a layer that expands more than this many times its compressed size (N for N:1), checked once it passes %s uncompressed; 0 disables", images.HumanSize(images.LayerRatioFloor)))
}

// options turns the flags into image options, refusing negative values.
func (f *imageFlags) options() ([]images.Option, error) {
	t := images.Timeouts{Connect: f.connectTimeout, Response: f.timeout}
	for _, d := range []struct {
		name string
		v    *time.Duration
	}{{"--registry-connect-timeout", &t.Connect}, {"--registry-timeout", &t.Response}} {
		switch {
		case *d.v < 0:
			return nil, fmt.Errorf("%s %v is negative: give a duration such as 30s, or 0 to wait forever: %w", d.name, *d.v, errdefs.ErrInvalidArgument)
		case *d.v == 0:
			*d.v = -1 // images.Timeouts: negative disables
		}
	}
	opts := []images.Option{images.WithTimeouts(t)}
	if f.maxLayerSize != 0 || f.maxLayerEntries != 0 || f.maxLayerRatio != 0 {
		if f.maxLayerEntries <= 0 {
			return nil, fmt.Errorf("--max-layer-entries %d: give a positive count: %w", f.maxLayerEntries, errdefs.ErrInvalidArgument)
		}
		if uint64(f.maxLayerSize) > 1<<62 {
			return nil, fmt.Errorf("--max-layer-size %d is too large: %w", f.maxLayerSize, errdefs.ErrInvalidArgument)
		}
		ratio := f.maxLayerRatio
		switch {
		case ratio < 0:
			return nil, fmt.Errorf("--max-layer-ratio %d is negative: give a ratio such as 100 (for 100:1), or 0 to disable the limit: %w", ratio, errdefs.ErrInvalidArgument)
		case ratio == 0:
			ratio = -1 // images.Limits: negative disables
		}
		opts = append(opts, images.WithLimits(images.Limits{MaxLayerSize: int64(f.maxLayerSize), MaxLayerEntries: f.maxLayerEntries, MaxLayerRatio: ratio}))
	}
	return opts, nil
}

// byteSize is a size flag (see bytesize.Parse) shown in binary units, so its
// default prints as 8Gi rather than 8589934592.
type byteSize uint64

func (b *byteSize) String() string {
	n := uint64(*b)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatUint(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10)
}

func (b *byteSize) Set(v string) error {
	n, err := bytesize.Parse(v)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

func (b *byteSize) Type() string { return "size" }
