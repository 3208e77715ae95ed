package main

import (
	"bytes"
	"encoding/json"
	"testing"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"google.golang.org/protobuf/proto"
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

func TestDelete(t *testing.T) {
	var out, errb bytes.Buffer
	args := []string{"-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock", "-publish-binary", "containerd", "-id", "c1", "-bundle", "/tmp/b", "delete"}
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var dr taskv2.DeleteResponse
	if err := proto.Unmarshal(out.Bytes(), &dr); err != nil {
		t.Fatal(err)
	}
	if dr.ExitStatus != 137 || dr.ExitedAt == nil {
		t.Fatalf("delete response %+v", &dr)
	}
}

func TestStartRefused(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"-id", "x", "start"}, &out, &errb); code == 0 || !bytes.Contains(errb.Bytes(), []byte("kuasar-sandboxer")) {
		t.Fatalf("start: exit %d, %q", code, errb.String())
	}
}
