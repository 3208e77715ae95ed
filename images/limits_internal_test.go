package images

import (
	"errors"
	"testing"
)

// TestLayerBudgetRatio checks the ratio limit's arithmetic on the counts a
// layer has reached: the floor, the limit, disabling it, and the sparse
// data count.
func TestLayerBudgetRatio(t *testing.T) {
	const MiB = 1 << 20
	tests := []struct {
		name                    string
		ratio                   int64
		compressed, bytes, data int64
		refused                 bool
	}{
		{"ordinary layer past the floor (3:1)", 0, 300 * MiB, 900 * MiB, 890 * MiB, false},
		{"zeros at the floor", 0, 1 * MiB, LayerRatioFloor, 0, false},
		{"zeros just past the floor", 0, 1 * MiB, LayerRatioFloor + 1, 0, true},
		{"exactly the limit", 0, 3 * MiB, 300 * MiB, 0, false},
		{"just over the limit", 0, 3 * MiB, 300*MiB + 1, 0, true},
		{"no compressed byte counted yet", 0, 0, LayerRatioFloor + 1, 0, true},
		{"sparse holes handed out as zeros", 0, 1 * MiB, 2 * MiB, 300 * MiB, true},
		{"disabled", -1, 1 * MiB, 4 << 30, 0, false},
		{"raised to 1000:1", 1000, 1 * MiB, 900 * MiB, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &layerBudget{layer: "sha256:0", lim: Limits{MaxLayerRatio: tc.ratio}.withDefaults(),
				compressed: tc.compressed, bytes: tc.bytes, data: tc.data}
			err := b.ratio()
			var le *LimitError
			if got := errors.As(err, &le); got != tc.refused {
				t.Fatalf("refused = %v (%v), want %v", got, err, tc.refused)
			}
			if le != nil && (le.Limit != LimitLayerRatio || le.Max != DefaultMaxLayerRatio || le.Ratio <= DefaultMaxLayerRatio) {
				t.Errorf("LimitError %+v, want the ratio limit at %d:1 and the ratio reached", le, DefaultMaxLayerRatio)
			}
		})
	}
}
