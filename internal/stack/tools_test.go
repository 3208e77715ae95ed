package stack

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// fakeTool writes an executable script at dir/name that prints version
// for --version.
func fakeTool(t *testing.T, dir, name, version string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho '"+version+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFindTools checks the lookup order of each tool: an explicit path,
// then its environment variable, then $PATH (for containerd only a 2.x
// release: the stack's configuration is version 4), then the directory
// make deps builds into; and the error naming the fix when all miss.
func TestFindTools(t *testing.T) {
	root := t.TempDir()
	tools := filepath.Join(root, "tools")
	cacheCD := fakeTool(t, filepath.Join(tools, "containerd-"+ContainerdVersion), "containerd", "containerd github.com/containerd/containerd/v2 2.4.2+unknown")
	cacheCtr := fakeTool(t, filepath.Join(tools, "containerd-"+ContainerdVersion), "ctr", "ctr")
	cacheCrictl := fakeTool(t, filepath.Join(tools, "crictl-"+CrictlVersion), "crictl", "crictl version v1.37.0")
	path2 := filepath.Join(root, "path2")
	pathCD2 := fakeTool(t, path2, "containerd", "containerd github.com/containerd/containerd/v2 v2.1.0 abc")
	pathCtr2 := fakeTool(t, path2, "ctr", "ctr")
	pathCrictl := fakeTool(t, path2, "crictl", "crictl version v1.33.0")
	path16 := filepath.Join(root, "path16")
	fakeTool(t, path16, "containerd", "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1")
	fakeTool(t, path16, "ctr", "ctr")
	envCD := fakeTool(t, filepath.Join(root, "env"), "containerd", "whatever")
	explicitCrictl := fakeTool(t, filepath.Join(root, "explicit"), "crictl", "crictl")

	tests := []struct {
		name         string
		path, envCD  string
		tools        string
		in           Tools
		want         Tools
		wantNotFound bool
	}{
		{name: "cache only", path: filepath.Join(root, "empty"), tools: tools,
			want: Tools{Containerd: cacheCD, Ctr: cacheCtr, Crictl: cacheCrictl}},
		{name: "containerd 2 in PATH wins over the cache, its ctr with it", path: path2, tools: tools,
			want: Tools{Containerd: pathCD2, Ctr: pathCtr2, Crictl: pathCrictl}},
		{name: "containerd 1.6 in PATH is passed over, and its ctr", path: path16, tools: tools,
			want: Tools{Containerd: cacheCD, Ctr: cacheCtr, Crictl: cacheCrictl}},
		{name: "environment wins over PATH", path: path2, envCD: envCD, tools: tools,
			want: Tools{Containerd: envCD, Ctr: pathCtr2, Crictl: pathCrictl}},
		{name: "explicit wins over all", path: path2, envCD: envCD, tools: tools, in: Tools{Crictl: explicitCrictl},
			want: Tools{Containerd: envCD, Ctr: pathCtr2, Crictl: explicitCrictl}},
		{name: "nothing anywhere", path: filepath.Join(root, "empty"), tools: filepath.Join(root, "none"), wantNotFound: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PATH", tc.path)
			t.Setenv(EnvTools, tc.tools)
			t.Setenv(EnvContainerd, tc.envCD)
			t.Setenv(EnvCtr, "")
			t.Setenv(EnvCrictl, "")
			got, err := FindTools(tc.in)
			if tc.wantNotFound {
				if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "make deps") {
					t.Fatalf("%v; want NotFound saying to run make deps", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.RuncShim = ""
			if got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
