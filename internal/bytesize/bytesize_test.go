package bytesize

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    uint64
		wantErr string // "" when the size is valid
	}{
		{in: "1048576", want: 1 << 20},
		{in: "64Ki", want: 64 << 10},
		{in: "64Mi", want: 64 << 20},
		{in: "64MiB", want: 64 << 20},
		{in: "1Gi", want: 1 << 30},
		{in: "1Ti", want: 1 << 40},
		{in: "512M", want: 512e6},
		{in: "512MB", want: 512e6},
		{in: "64M", want: 64e6},
		{in: "1G", want: 1e9},
		{in: "100K", want: 100e3},
		{in: "100k", want: 100e3},
		{in: "2T", want: 2e12},
		// docker's lower-case units mean MiB there and milli in Kubernetes:
		// refused, naming both spellings.
		{in: "512m", wantErr: "write 512Mi (powers of 1024) or 512M"},
		{in: "512mb", wantErr: "not a size"},
		{in: "1g", wantErr: "write 1Gi (powers of 1024) or 1G"},
		{in: "1t", wantErr: "lower-case"},
		{in: "", wantErr: "not a size"},
		{in: "0", wantErr: "not a size"},
		{in: "-1", wantErr: "not a size"},
		{in: "1.5G", wantErr: "not a size"},
		{in: "64X", wantErr: "not a size"},
		{in: "m", wantErr: "not a size"},
		{in: "99999999999Ti", wantErr: "too large"},
	}
	for _, tc := range tests {
		got, err := Parse(tc.in)
		if tc.wantErr == "" {
			if err != nil || got != tc.want {
				t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errdefs.IsInvalidArgument(err) {
			t.Errorf("Parse(%q) = %d, %v; want an invalid-argument error containing %q", tc.in, got, err, tc.wantErr)
		}
	}
}
