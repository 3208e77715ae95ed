package exitrecord

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestWriteRead(t *testing.T) {
	b := t.TempDir()
	if _, err := Read(b); !errdefs.IsNotFound(err) {
		t.Fatalf("empty bundle: %v, want NotFound", err)
	}
	at := time.Now().UTC().Truncate(time.Microsecond)
	for _, st := range []uint32{137, 0} { // the second replaces the first
		if err := Write(b, Record{Status: st, ExitedAt: at, Pid: 9}); err != nil {
			t.Fatal(err)
		}
		r, err := Read(b)
		if err != nil || r.Status != st || !r.ExitedAt.Equal(at) || r.Pid != 9 {
			t.Fatalf("read %+v %v, want status %d", r, err, st)
		}
	}
	ents, _ := os.ReadDir(b)
	if len(ents) != 1 || ents[0].Name() != FileName {
		t.Fatalf("bundle holds %v, want only %s (no temporary file)", ents, FileName)
	}
	fi, _ := os.Stat(filepath.Join(b, FileName))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("record mode %v, want 0600", fi.Mode())
	}
}

func TestWriteRefusesSymlinkedBundle(t *testing.T) {
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "bundle")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if err := Write(link, Record{Status: 1, ExitedAt: time.Now()}); err == nil {
		t.Fatal("Write followed a symlinked bundle")
	}
	if ents, _ := os.ReadDir(real); len(ents) != 0 {
		t.Fatalf("symlink target got %v", ents)
	}
	if err := Write(filepath.Join(real, "gone"), Record{Status: 1, ExitedAt: time.Now()}); !errdefs.IsNotFound(err) {
		t.Fatalf("missing bundle: %v, want NotFound", err)
	}
}

// TestWriteUnderSymlinkedParent: a symlink above the bundle directory (as
// /var/run is to /run) is followed; only the bundle itself may not be one.
func TestWriteUnderSymlinkedParent(t *testing.T) {
	real := t.TempDir()
	if err := os.Mkdir(filepath.Join(real, "bundle"), 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "run")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC()
	if err := Write(filepath.Join(link, "bundle"), Record{Status: 3, ExitedAt: at}); err != nil {
		t.Fatal(err)
	}
	r, err := Read(filepath.Join(real, "bundle"))
	if err != nil || r.Status != 3 || !r.ExitedAt.Equal(at) {
		t.Fatalf("read %+v, %v", r, err)
	}
}

func TestReadRefusesRecordWithoutTime(t *testing.T) {
	b := t.TempDir()
	os.WriteFile(filepath.Join(b, FileName), []byte(`{"exit_status":0}`), 0o600)
	if _, err := Read(b); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("record without exited_at: %v, want InvalidArgument", err)
	}
}

// TestReadEmptyIsNoRecord: Write creates the record and then writes it; a
// reader in between (or after a crash in between) sees no record, not a
// broken one.
func TestReadEmptyIsNoRecord(t *testing.T) {
	b := t.TempDir()
	if err := os.WriteFile(filepath.Join(b, FileName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(b); !errdefs.IsNotFound(err) {
		t.Fatalf("empty record: %v, want NotFound", err)
	}
}

// TestMarshalIsJSONMarshal: the hand-written encoding is encoding/json's.
func TestMarshalIsJSONMarshal(t *testing.T) {
	east := time.FixedZone("east", 5*3600+30*60)
	for _, r := range []Record{
		{},
		{Status: 137, ExitedAt: time.Date(2026, 12, 5, 19, 24, 40, 123456789, time.UTC), Pid: 4242},
		{Status: 0, ExitedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, east)},
		{Status: 4294967295, ExitedAt: time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC), Pid: 4294967295},
		{Status: 1, ExitedAt: time.Now()},
		{Status: 2, ExitedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		got, gerr := r.marshal()
		want, werr := json.Marshal(r)
		if string(got) != string(want) || (gerr == nil) != (werr == nil) {
			t.Errorf("marshal(%+v) = %s, %v; json.Marshal: %s, %v", r, got, gerr, want, werr)
		}
	}
}
