package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

// bombImage is a Linux image whose layer is 64 MiB of zeros, gzipped.
func bombImage(t *testing.T) *images.MemoryImage {
	t.Helper()
	var b bytes.Buffer
	gw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	tw := tar.NewWriter(gw)
	tw.WriteHeader(&tar.Header{Name: "zeros", Mode: 0o644, Size: 64 << 20, Typeflag: tar.TypeReg})
	tw.Write(make([]byte, 64<<20))
	tw.Close()
	gw.Close()
	img, err := images.BuildImage(images.ImageSpec{
		Config: ocispec.Image{
			Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
			Config:   ocispec.ImageConfig{Entrypoint: []string{"/bin/true"}},
			RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(b.Bytes())}},
		},
		Layers: []images.Layer{{MediaType: ocispec.MediaTypeImageLayerGzip, Data: b.Bytes()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestRegistryFlags runs pull and run against a registry that never answers
// and a decompression bomb, with the timeout and limit flags.
func TestRegistryFlags(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no user credentials
	silent := testenv.SilentListener(t)
	host := startRegistry(t)
	bombRef := host + "/demo/bomb:v1"
	if err := bombImage(t).Push(context.Background(), bombRef); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "state")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  []string
	}{
		{"pull from a silent registry", []string{"pull", "--registry-timeout", "1s", silent + "/app:v1"}, exitImageFailure,
			[]string{silent, "response headers", "--registry-timeout"}},
		{"run from a silent registry", []string{"run", "--registry-timeout", "1s", silent + "/app:v1"}, exitKuasarError,
			[]string{silent, "response headers", "--registry-timeout"}},
		{"pull a bomb over --max-layer-size", []string{"pull", "--max-layer-size", "16Mi", bombRef}, exitImageFailure,
			[]string{bombRef, "uncompressed layer size", "16777216 bytes", "--max-layer-size"}},
		{"run a bomb over --max-layer-size", []string{"run", "--max-layer-size", "16Mi", bombRef}, exitKuasarError,
			[]string{bombRef, "--max-layer-size"}},
		{"pull a bomb over --max-layer-entries", []string{"pull", "--max-layer-entries", "0", bombRef}, exitImageFailure,
			[]string{"--max-layer-entries 0"}},
		{"negative --max-layer-ratio", []string{"pull", "--max-layer-ratio", "-1", bombRef}, exitImageFailure,
			[]string{"--max-layer-ratio -1 is negative"}},
		{"negative timeout", []string{"pull", "--registry-connect-timeout", "-1s", bombRef}, exitImageFailure,
			[]string{"--registry-connect-timeout -1s is negative"}},
		{"the bomb under the default limits", []string{"pull", bombRef}, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A pull the flags fail to stop ends at this deadline (and the
			// test fails on the missing flag name) instead of hanging.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var out, errb bytes.Buffer
			env := &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, stateDir: state}
			code := runCLI(ctx, env, tc.args)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstderr: %s", code, tc.wantCode, errb.String())
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errb.String())
				}
			}
			if tc.wantCode != 0 {
				// Nothing of a refused image is left in the store.
				for _, d := range []string{"blobs/sha256", "rootfs", "ingest"} {
					if ents, _ := os.ReadDir(filepath.Join(state, "images", d)); len(ents) != 0 {
						t.Errorf("%s holds %d entries after a refused pull", d, len(ents))
					}
				}
			}
		})
	}
}
