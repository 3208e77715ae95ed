package exithook

import (
	"slices"
	"testing"
)

// Functions added before Run run once each, in order, at Run; a function
// added after Run runs at once; a second Run runs nothing again.
func TestHooks(t *testing.T) {
	var h Hooks
	var got []string
	h.Add(func() { got = append(got, "a") })
	h.Add(func() { got = append(got, "b") })
	if len(got) != 0 {
		t.Fatalf("ran before Run: %v", got)
	}
	h.Run()
	if want := []string{"a", "b"}; !slices.Equal(got, want) {
		t.Fatalf("after Run: %v, want %v", got, want)
	}
	h.Add(func() { got = append(got, "late") })
	if want := []string{"a", "b", "late"}; !slices.Equal(got, want) {
		t.Fatalf("a hook added after Run: %v, want %v", got, want)
	}
	h.Run()
	if len(got) != 3 {
		t.Fatalf("second Run ran hooks again: %v", got)
	}
}
