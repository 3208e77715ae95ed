package bytesize

import "testing"

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"1048576", 1 << 20, true}, {"64Mi", 64 << 20, true}, {"64MiB", 64 << 20, true}, {"1Gi", 1 << 30, true},
		{"512M", 512e6, true}, {"1G", 1e9, true}, {"100K", 100e3, true}, {"512m", 512 << 20, true}, {"1g", 1 << 30, true},
		{"", 0, false}, {"0", 0, false}, {"-1", 0, false}, {"1.5G", 0, false}, {"64X", 0, false}, {"99999999999Ti", 0, false},
	}
	for _, tc := range tests {
		got, err := Parse(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
