package images_test

import (
	"bytes"
	"context"
	stdbase64 "encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"

	"github.com/kuasar-go/kuasar/images"
)

// testRegistry is a real distribution registry served in-process on
// 127.0.0.1 with in-memory storage, optionally behind htpasswd auth.
type testRegistry struct {
	srv  *httptest.Server
	host string // 127.0.0.1:PORT
}

func newTestRegistry(t testing.TB, user, pass string) *testRegistry {
	t.Helper()
	logrus.SetOutput(io.Discard)
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"inmemory":    configuration.Parameters{},
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		},
	}
	cfg.Log.Level = "error"
	if user != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htp := filepath.Join(t.TempDir(), "htpasswd")
		if err := os.WriteFile(htp, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "kuasar-test", "path": htp}}
	}
	app := handlers.NewApp(context.Background(), cfg)
	srv := httptest.NewServer(app)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return &testRegistry{srv: srv, host: u.Host}
}

// tamperProxy serves a registry but flips one byte of any response whose
// URL path ends with one of the given digests (same length, wrong content).
func tamperProxy(t testing.TB, upstream *testRegistry, digests ...string) string {
	t.Helper()
	u, _ := url.Parse(upstream.srv.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(r *http.Response) error {
		if r.Request.Method != http.MethodGet {
			return nil
		}
		for _, d := range digests {
			if strings.HasSuffix(r.Request.URL.Path, d) {
				b, err := io.ReadAll(r.Body)
				if err != nil {
					return err
				}
				r.Body.Close()
				if len(b) > 0 {
					b[len(b)/2] ^= 0xff
				}
				r.Body = io.NopCloser(bytes.NewReader(b))
			}
		}
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	pu, _ := url.Parse(srv.URL)
	return pu.Host
}

// dockerConfig writes a docker config.json with basic auth for host.
func dockerConfig(t *testing.T, host, user, pass string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	auth := base64(user + ":" + pass)
	if err := os.WriteFile(p, []byte(`{"auths":{"`+host+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func base64(s string) string { return stdbase64.StdEncoding.EncodeToString([]byte(s)) }

// assertStoreEmpty fails when a store holds any blob, rootfs, staging
// directory or named image.
func assertStoreEmpty(t *testing.T, s *images.Store) {
	t.Helper()
	for _, d := range []string{"blobs/sha256", "rootfs", "ingest"} {
		ents, err := os.ReadDir(filepath.Join(s.Root(), d))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 0 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("store %s is not empty after a failed pull: %v", d, names)
		}
	}
	list, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("store names %d images after a failed pull: %+v", len(list), list)
	}
}

func openStore(t *testing.T) *images.Store {
	t.Helper()
	s, err := images.OpenStore(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ocispecConfig(entrypoint ...string) ocispec.ImageConfig {
	return ocispec.ImageConfig{Entrypoint: entrypoint}
}

func ocispecPlatform() ocispec.Platform { return ocispec.Platform{} }
