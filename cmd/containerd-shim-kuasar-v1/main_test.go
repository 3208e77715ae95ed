package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"google.golang.org/protobuf/proto"

	"github.com/kuasar-go/kuasar/internal/exitrecord"
)

func TestInfo(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"-info"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var ri types.RuntimeInfo
	if err := proto.Unmarshal(out.Bytes(), &ri); err != nil {
		t.Fatal(err)
	}
	if ri.Name != runtimeName || ri.Features.GetTypeUrl() != featuresTypeURL {
		t.Fatalf("runtime info %+v", &ri)
	}
	var f features.Features
	if err := json.Unmarshal(ri.Features.GetValue(), &f); err != nil || f.OCIVersionMax == "" {
		t.Fatalf("features %s: %v", ri.Features.GetValue(), err)
	}
}

// TestDeleteReportsRecordedExit runs delete as containerd does after it lost
// a task's server, over bundles holding each kind of exit record: the
// recorded status must come back, and a bundle without a usable record
// reports the task killed (137) and says why.
func TestDeleteReportsRecordedExit(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	tests := []struct {
		name       string
		setup      func(t *testing.T, bundle string)
		flags      func(bundle string) []string
		wantStatus uint32
		wantPid    uint32
		wantStderr string
	}{
		{name: "exit 0 recorded", setup: record(exitrecord.Record{Status: 0, ExitedAt: at, Pid: 7}), wantStatus: 0, wantPid: 7},
		{name: "exit 42 recorded", setup: record(exitrecord.Record{Status: 42, ExitedAt: at}), wantStatus: 42},
		{name: "killed by SIGTERM recorded", setup: record(exitrecord.Record{Status: 143, ExitedAt: at}), wantStatus: 143},
		{name: "-bundle=DIR form", setup: record(exitrecord.Record{Status: 3, ExitedAt: at}),
			flags: func(b string) []string { return []string{"-id", "c1", "-bundle=" + b, "delete"} }, wantStatus: 3},
		{name: "namespace named delete does not hide the bundle", setup: record(exitrecord.Record{Status: 5, ExitedAt: at}),
			flags: func(b string) []string {
				return []string{"-namespace", "delete", "-id", "start", "-bundle", b, "delete"}
			}, wantStatus: 5},
		{name: "no record", setup: func(*testing.T, string) {}, wantStatus: 137, wantStderr: "no exit recorded"},
		{name: "record is a symlink", setup: func(t *testing.T, b string) {
			target := filepath.Join(t.TempDir(), "elsewhere.json")
			os.WriteFile(target, []byte(`{"exit_status":0,"exited_at":"2026-01-02T03:04:05Z"}`), 0o600)
			if err := os.Symlink(target, filepath.Join(b, exitrecord.FileName)); err != nil {
				t.Fatal(err)
			}
		}, wantStatus: 137, wantStderr: "symlink"},
		{name: "record is a directory", setup: func(t *testing.T, b string) {
			os.Mkdir(filepath.Join(b, exitrecord.FileName), 0o700)
		}, wantStatus: 137, wantStderr: "not a regular file"},
		{name: "record is garbage", setup: func(t *testing.T, b string) {
			os.WriteFile(filepath.Join(b, exitrecord.FileName), []byte("{exit"), 0o600)
		}, wantStatus: 137, wantStderr: "exit record"},
		{name: "record too large", setup: func(t *testing.T, b string) {
			os.WriteFile(filepath.Join(b, exitrecord.FileName), bytes.Repeat([]byte(" "), 1<<20), 0o600)
		}, wantStatus: 137, wantStderr: "at most"},
		{name: "bundle missing", setup: func(t *testing.T, b string) { os.Remove(b) }, wantStatus: 137, wantStderr: "no exit recorded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bundle := filepath.Join(t.TempDir(), "bundle")
			if err := os.Mkdir(bundle, 0o700); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, bundle)
			args := []string{"-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock", "-publish-binary", "containerd", "-id", "c1", "-bundle", bundle, "delete"}
			if tt.flags != nil {
				args = tt.flags(bundle)
			}
			var out, errb bytes.Buffer
			if code := run(args, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			var dr taskv2.DeleteResponse
			if err := proto.Unmarshal(out.Bytes(), &dr); err != nil {
				t.Fatal(err)
			}
			if dr.ExitStatus != tt.wantStatus || dr.Pid != tt.wantPid || dr.ExitedAt == nil {
				t.Fatalf("delete response %+v, want status %d pid %d", &dr, tt.wantStatus, tt.wantPid)
			}
			if tt.wantStderr == "" {
				if !dr.ExitedAt.AsTime().Equal(at) {
					t.Fatalf("exited_at %v, want the recorded %v", dr.ExitedAt.AsTime(), at)
				}
				if errb.Len() != 0 {
					t.Fatalf("unexpected stderr %q", errb.String())
				}
			} else if !strings.Contains(errb.String(), tt.wantStderr) {
				t.Fatalf("stderr %q, want it to contain %q", errb.String(), tt.wantStderr)
			}
		})
	}
}

func record(r exitrecord.Record) func(*testing.T, string) {
	return func(t *testing.T, bundle string) {
		if err := exitrecord.Write(bundle, r); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStartRefused(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"-id", "x", "start"}, &out, &errb); code == 0 || !bytes.Contains(errb.Bytes(), []byte("kuasar-sandboxer")) {
		t.Fatalf("start: exit %d, %q", code, errb.String())
	}
}
