package wasmtask

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// TestRecordFileOldOrNew: every write reads back as written; a slot torn
// at any byte (a write cut short) reads as the records before it; records
// that outgrow a slot start a fresh file; the plain JSON list of earlier
// versions still reads; a file with no intact slot is an error.
func TestRecordFileOldOrNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wasm-tasks.json")
	var f recordFile
	read := func() string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		d, err := decodeRecordFile(b)
		if err != nil {
			t.Fatal(err)
		}
		return string(d)
	}
	versions := []string{`[{"id":"a"}]`, `[]`, `[{"id":"b"}]`, `[{"id":"b"},{"id":"c"}]`, `[]`}
	for i, v := range versions {
		if err := f.write(path, []byte(v)); err != nil {
			t.Fatal(err)
		}
		if got := read(); got != v {
			t.Fatalf("write %d: read %q, want %q", i, got, v)
		}
	}
	if f.seq != uint64(len(versions)) || f.stride != recordPage {
		t.Fatalf("writer state %+v: want seq %d in one file of stride %d", f, len(versions), recordPage)
	}

	// Tear the next write after each of its bytes: the reader sees the
	// last complete records.
	prev := read()
	next := []byte(`[{"id":"torn"}]`)
	slot := encodeSlot(f.stride, f.seq+1, next)
	off := 0
	if (f.seq+1)%2 == 0 {
		off = f.stride
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for cut := 0; cut < len(slot); cut++ {
		b := append([]byte(nil), good...)
		if len(b) < off+len(slot) {
			b = append(b, make([]byte, off+len(slot)-len(b))...)
		}
		copy(b[off:], slot[:cut])
		d, err := decodeRecordFile(b[:max(len(good), off+cut)])
		if err != nil || string(d) != prev {
			t.Fatalf("slot torn after %d bytes: read %q, %v; want the old %q", cut, d, err, prev)
		}
	}

	// Records larger than a slot: a fresh file with a wider stride.
	big := []byte("[" + strings.Repeat(`{"id":"x"},`, 500) + `{"id":"y"}]`)
	for range 3 {
		if err := f.write(path, big); err != nil {
			t.Fatal(err)
		}
		if got := read(); got != string(big) {
			t.Fatalf("big records read back as %d bytes, want %d", len(got), len(big))
		}
	}
	if f.stride != 8192 || f.seq != 3 {
		t.Fatalf("writer state after growth %+v: want stride 8192, seq 3", f)
	}

	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"plain JSON of earlier versions", []byte(`[{"id":"old"}]`), `[{"id":"old"}]`},
		{"empty file", nil, ""},
	}
	for _, tc := range tests {
		d, err := decodeRecordFile(tc.file)
		if err != nil || string(d) != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, d, err, tc.want)
		}
	}
	corrupt := encodeSlot(recordPage, 1, []byte(`[]`))
	corrupt[recordHeader] ^= 1
	if _, err := decodeRecordFile(corrupt); !errdefs.IsDataLoss(err) {
		t.Errorf("a file without an intact slot: %v, want a data loss error", err)
	}
	if !bytes.HasPrefix(encodeSlot(recordPage, 1, nil), []byte(recordMagic)) {
		t.Error("a slot does not start with the magic")
	}
}
