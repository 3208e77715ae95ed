package main

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/sirupsen/logrus"

	"github.com/kuasar-go/kuasar/internal/fixtures"
)

// imageCLI runs `kuasar ARGS...` in-process with its own streams.
func imageCLI(t *testing.T, stateDir string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, stateDir: stateDir}
	code := runCLI(context.Background(), env, args)
	return code, out.String(), errb.String()
}

// startRegistry serves a real distribution registry on 127.0.0.1.
func startRegistry(t *testing.T) string {
	t.Helper()
	logrus.SetOutput(io.Discard)
	cfg := &configuration.Configuration{Storage: configuration.Storage{
		"inmemory":    configuration.Parameters{},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
	}}
	srv := httptest.NewServer(handlers.NewApp(context.Background(), cfg))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u.Host
}

// TestImageCLI drives build, push, pull, images and run end to end.
func TestImageCLI(t *testing.T) {
	host := startRegistry(t)
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no user credentials
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	mod := filepath.Join(dir, "hello.wasm")
	if err := os.WriteFile(mod, fixtures.Hello, 0o644); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755)
	os.WriteFile(filepath.Join(rootfs, "bin", "app"), []byte("#!/bin/sh\necho hi\n"), 0o755)

	ref := host + "/demo/hello:v1"
	artRef := host + "/demo/hello-artifact:v1"
	steps := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string
		wantErr  string
	}{
		{"build and push a plain image", []string{"image", "build", "--wasm", mod, "--tag", ref, "--push", "--annotation", "kuasar.io/isolation=wasm"}, 0, []string{ref, "sha256:"}, ""},
		{"build and push an artifact", []string{"image", "build", "--wasm", mod, "--artifact", "--tag", artRef, "--push"}, 0, []string{artRef}, ""},
		{"build an OCI layout", []string{"image", "build", "--wasm", mod, "--tag", "example.com/hello:layout", "--output", filepath.Join(dir, "layout")}, 0, nil, ""},
		{"build an OCI archive", []string{"image", "build", "--wasm", mod, "--artifact", "--tag", "example.com/hello:tar", "--output", filepath.Join(dir, "hello.tar")}, 0, nil, ""},
		{"build a Linux image from a rootfs", []string{"image", "build", "--rootfs", rootfs, "--entrypoint", "/bin/app", "--tag", "example.com/linux:1", "--output", filepath.Join(dir, "linux.tar")}, 0, nil, ""},
		{"bad isolation annotation", []string{"image", "build", "--wasm", mod, "--tag", "x:1", "--output", filepath.Join(dir, "x"), "--annotation", "kuasar.io/isolation=kvm"}, exitImageFailure, nil, "use wasm, vm or quark"},
		{"build without --tag", []string{"image", "build", "--wasm", mod, "--output", filepath.Join(dir, "y")}, 2, nil, "--tag is required"},
		{"build a non-Wasm file", []string{"image", "build", "--wasm", filepath.Join(rootfs, "bin", "app"), "--tag", "x:1", "--output", filepath.Join(dir, "z")}, exitImageFailure, nil, "not a Wasm module"},
		{"pull from the registry", []string{"pull", ref}, 0, []string{ref, "wasm"}, ""},
		{"pull the artifact", []string{"pull", artRef}, 0, []string{artRef}, ""},
		{"pull a missing tag", []string{"pull", host + "/demo/none:v1"}, exitImageFailure, nil, "not found"},
		{"import an archive", []string{"pull", filepath.Join(dir, "linux.tar")}, 0, []string{"example.com/linux:1", "linux"}, ""},
		{"list", []string{"images"}, 0, []string{"REF", "DIGEST", "KIND", "SIZE", ref, artRef, "example.com/linux:1"}, ""},
		{"list via image ls", []string{"image", "ls", "-q"}, 0, []string{ref}, ""},
		{"run the pulled image", []string{"run", ref}, 0, []string{fixtures.HelloGreeting}, ""},
		{"run the artifact", []string{"run", artRef, "--", "a1"}, 0, []string{fixtures.HelloGreeting, "a1"}, ""},
		{"run a layout", []string{"run", filepath.Join(dir, "layout")}, 0, []string{fixtures.HelloGreeting}, ""},
		{"run an archive by name", []string{"run", filepath.Join(dir, "hello.tar") + ":tar"}, 0, []string{fixtures.HelloGreeting}, ""},
		{"remove an image", []string{"image", "rm", artRef}, 0, []string{"Untagged: " + artRef, "Total reclaimed space"}, ""},
		{"remove it again", []string{"image", "rm", artRef}, exitImageFailure, nil, "not in the store"},
		{"list after remove", []string{"images", "-q"}, 0, []string{ref}, ""},
		{"tag for another repository", []string{"image", "tag", ref, host + "/demo/copy:v2"}, 0, []string{host + "/demo/copy:v2 sha256:"}, ""},
		{"push the tag", []string{"image", "push", host + "/demo/copy:v2"}, 0, []string{host + "/demo/copy:v2 sha256:"}, ""},
		{"push under another name", []string{"image", "push", ref, host + "/demo/other:v3"}, 0, []string{host + "/demo/other:v3 sha256:"}, ""},
		{"push a missing image", []string{"image", "push", host + "/demo/none:v1"}, exitImageFailure, nil, "not in the store"},
		{"remove the tag", []string{"image", "rm", host + "/demo/copy:v2"}, 0, []string{"Untagged: " + host + "/demo/copy:v2", "Total reclaimed space: 0 B"}, ""},
		{"pull the pushed copy back", []string{"pull", host + "/demo/copy:v2"}, 0, []string{host + "/demo/copy:v2", "wasm"}, ""},
		{"run the image pushed under another name", []string{"run", host + "/demo/other:v3"}, 0, []string{fixtures.HelloGreeting}, ""},
		{"inspect", []string{"image", "inspect", host + "/demo/other:v3"}, 0, []string{`"name": "` + host + `/demo/other:v3"`, `"manifest_content"`}, ""},
		{"prune", []string{"image", "prune"}, 0, []string{"Total reclaimed space"}, ""},
		{"run a Linux image with wasm isolation", []string{"run", "--isolation", "wasm", filepath.Join(dir, "linux.tar")}, 125, nil, "--isolation vm"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			code, out, errOut := imageCLI(t, state, st.args...)
			if code != st.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, st.wantCode, out, errOut)
			}
			for _, w := range st.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if st.wantErr != "" && !strings.Contains(errOut, st.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", st.wantErr, errOut)
			}
		})
	}
}
