package images_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/fixtures"
)

// noCreds is a docker config without credentials, so tests never read the
// user's own ~/.docker/config.json.
func noCreds(t *testing.T) images.Option {
	p := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(p, []byte(`{}`), 0o600)
	return images.WithDockerConfig(p)
}

// TestRegistryRoundTrip pushes every shape to a real registry with the
// build code, pulls it back into a fresh store and resolves it.
func TestRegistryRoundTrip(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t, "", "")
	for i, tc := range shapeCases() {
		t.Run(tc.name, func(t *testing.T) {
			ref := fmt.Sprintf("%s/shapes/s%d:v1", reg.host, i)
			if err := tc.build(t).Push(ctx, ref, noCreds(t)); err != nil {
				t.Fatalf("push: %v", err)
			}
			s := openStore(t)
			e, err := s.Pull(ctx, ref, noCreds(t))
			if err != nil {
				t.Fatalf("pull: %v", err)
			}
			if e.Name != ref || e.Kind != tc.kind || e.Shape != tc.shape {
				t.Errorf("entry = %+v", e)
			}
			w, err := s.Resolve(ctx, ref)
			if err != nil {
				t.Fatalf("resolve: %v", err)
			}
			checkWorkload(t, tc, w)
			if w.Reference != ref {
				t.Errorf("reference = %q", w.Reference)
			}
		})
	}
	// Resolve pulls what the store lacks, showing progress when asked.
	s := openStore(t)
	var progress bytes.Buffer
	if _, err := s.Resolve(ctx, reg.host+"/shapes/s0:v1", noCreds(t), images.WithProgress(&progress)); err != nil {
		t.Fatalf("resolve of a missing image did not pull: %v", err)
	}
	if n := strings.Count(progress.String(), " done"); n != 3 {
		t.Errorf("progress shows %d finished blobs, want 3 (manifest, config, layer):\n%q", n, progress.String())
	}
	if _, err := s.Resolve(ctx, reg.host+"/shapes/absent:v1", noCreds(t)); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing tag: err = %v, want not found", err)
	}
}

// TestRegistryAuth uses a registry behind htpasswd basic auth and a docker
// config.json holding the credentials.
func TestRegistryAuth(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t, "alice", "s3cret")
	ref := reg.host + "/private/hello:1"
	img, err := images.BuildWasmImage(ctx, fixtures.Hello, "hello.wasm")
	if err != nil {
		t.Fatal(err)
	}
	good := images.WithDockerConfig(dockerConfig(t, reg.host, "alice", "s3cret"))
	bad := images.WithDockerConfig(dockerConfig(t, reg.host, "alice", "wrong"))
	if err := img.Push(ctx, ref, noCreds(t)); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("anonymous push: err = %v, want permission denied", err)
	}
	if err := img.Push(ctx, ref, good); err != nil {
		t.Fatalf("push with credentials: %v", err)
	}
	tests := []struct {
		name    string
		opt     images.Option
		wantErr error
	}{
		{"no credentials", noCreds(t), errdefs.ErrPermissionDenied},
		{"wrong password", bad, errdefs.ErrPermissionDenied},
		{"docker config credentials", good, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			_, err := s.Pull(ctx, ref, tc.opt)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), "config.json") {
					t.Errorf("error does not say where credentials go: %v", err)
				}
				assertStoreEmpty(t, s)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			w, err := s.Resolve(ctx, ref)
			if err != nil || w.ModuleDigest == "" {
				t.Fatalf("resolve: %v", err)
			}
		})
	}
}

// TestRegistryServesWrongBytes puts a proxy that corrupts one blob between
// the store and a real registry.
func TestRegistryServesWrongBytes(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t, "", "")
	img, err := images.BuildWasmImage(ctx, fixtures.Hello, "hello.wasm")
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Push(ctx, reg.host+"/app/hello:1", noCreds(t)); err != nil {
		t.Fatal(err)
	}
	man := manifestOf(t, img)
	tests := []struct {
		name   string
		digest string
	}{
		{"manifest", img.Root.Digest.String()},
		{"config", man.Config.Digest.String()},
		{"layer", man.Layers[0].Digest.String()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The proxy listens on 127.0.0.1, so the store talks plain HTTP to it.
			proxy := tamperProxy(t, reg, tc.digest)
			s := openStore(t)
			_, err := s.Pull(ctx, proxy+"/app/hello:1", noCreds(t))
			if !errors.Is(err, images.ErrDigestMismatch) {
				t.Fatalf("err = %v, want digest mismatch", err)
			}
			assertStoreEmpty(t, s)
		})
	}
}

// TestConcurrentPulls pulls one image from 20 goroutines sharing a Store
// and 5 more each with their own Store on the same directory (as separate
// processes would), and checks the store is whole and consistent.
func TestConcurrentPulls(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t, "", "")
	ref := reg.host + "/app/busy:1"
	files, err := images.BusyboxFiles("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	img, err := images.BuildLinuxImage(ctx, files, ocispecConfig("sleep", "1"), ocispecPlatform())
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Push(ctx, ref, noCreds(t)); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	var wg sync.WaitGroup
	errs := make(chan error, 25)
	digests := make(chan string, 25)
	for i := 0; i < 25; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			st := s
			if i >= 20 {
				var err error
				if st, err = images.OpenStore(s.Root()); err != nil {
					errs <- err
					return
				}
			}
			e, err := st.Pull(ctx, ref, noCreds(t))
			if err != nil {
				errs <- err
				return
			}
			digests <- e.Manifest.Digest.String()
		}(i)
	}
	wg.Wait()
	close(errs)
	close(digests)
	for err := range errs {
		t.Errorf("pull: %v", err)
	}
	for d := range digests {
		if d != img.Root.Digest.String() {
			t.Errorf("pull gave manifest %s, want %s", d, img.Root.Digest)
		}
	}
	blobs, _ := os.ReadDir(filepath.Join(s.Root(), "blobs", "sha256"))
	if len(blobs) != 3 { // manifest, config, layer
		t.Errorf("store holds %d blobs, want 3", len(blobs))
	}
	for _, d := range []string{"ingest"} {
		if ents, _ := os.ReadDir(filepath.Join(s.Root(), d)); len(ents) != 0 {
			t.Errorf("%s not cleaned: %d entries", d, len(ents))
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Root(), "rootfs")); len(ents) != 1 {
		t.Errorf("rootfs holds %d trees, want 1", len(ents))
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list = %+v, %v", list, err)
	}
	w, err := s.Resolve(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(w.Rootfs, "bin", "sleep")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("rootfs bin/sleep: %v %v", fi, err)
	}
}
