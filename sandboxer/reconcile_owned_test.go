package sandboxer

import (
	"os"
	"path/filepath"
	"testing"
)

// TestOwnedFindsRecords: a backend directory owns processes when a record
// lies in it (Quark's quark.proc) or one level down (a VM's vm/vmm.proc);
// without one, reconciliation scans no /proc for it. Before, a record in
// the directory itself was not seen, and a Quark sandbox process whose
// start was interrupted was never looked for.
func TestOwnedFindsRecords(t *testing.T) {
	for _, tc := range []struct {
		name string
		rec  string // a record file below the directory, "" for none
		want bool
	}{
		{"no record", "", false},
		{"quark's record in the directory", "quark.proc", true},
		{"a VMM's record one level down", "vm/vmm.proc", true},
		{"too deep", "vm/x/vmm.proc", false},
		{"another extension", "quark.json", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.rec != "" {
				p := filepath.Join(dir, tc.rec)
				if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("{}"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := owned(dir); got != tc.want {
				t.Fatalf("owned with %q = %v, want %v", tc.rec, got, tc.want)
			}
		})
	}
}
