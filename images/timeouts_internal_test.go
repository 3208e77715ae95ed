package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	orasErrdef "oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// TestRegistryErrorKinds classifies registry errors by type and status code.
// Several rows carry "401" or "not found" in text that is not a status: a
// classification by substring gets them wrong.
func TestRegistryErrorKinds(t *testing.T) {
	resp := func(port string, code int) error {
		u, _ := url.Parse("http://127.0.0.1:" + port + "/v2/app/manifests/v1")
		return fmt.Errorf("resolve: %w", &errcode.ErrorResponse{Method: http.MethodGet, URL: u, StatusCode: code})
	}
	timeout := &TimeoutError{Host: "127.0.0.1:44011", Phase: PhaseResponseHeader, Limit: time.Second, Flag: flagResponseTimeout}
	tests := []struct {
		name string
		err  error
		is   func(error) bool
		kind string
	}{
		{"404 from a port holding 401", resp("44011", http.StatusNotFound), errdefs.IsNotFound, "not found"},
		{"500 from a port holding 401", resp("40123", http.StatusInternalServerError), errdefs.IsUnavailable, "unavailable"},
		{"401", resp("5000", http.StatusUnauthorized), errdefs.IsPermissionDenied, "permission denied"},
		{"403", resp("5000", http.StatusForbidden), errdefs.IsPermissionDenied, "permission denied"},
		{"429", resp("5000", http.StatusTooManyRequests), errdefs.IsUnavailable, "unavailable"},
		{"no credentials", fmt.Errorf("GET %q: %w", "http://127.0.0.1:5000/v2/", auth.ErrBasicCredentialNotFound), errdefs.IsPermissionDenied, "permission denied"},
		{"oras not found", fmt.Errorf("127.0.0.1:44011/app:v1: %w", orasErrdef.ErrNotFound), errdefs.IsNotFound, "not found"},
		{"oras size limit", fmt.Errorf("manifest: %w", orasErrdef.ErrSizeExceedsLimit), errdefs.IsResourceExhausted, "resource exhausted"},
		{"refused connect to port 4011", errors.New("dial tcp 127.0.0.1:4011: connect: connection refused"), errdefs.IsUnavailable, "unavailable"},
		{"DNS not found is no 404", errors.New("dial tcp: lookup registry.invalid: no such host (not found)"), errdefs.IsUnavailable, "unavailable"},
		{"timeout", &url.Error{Op: "Get", URL: "http://127.0.0.1:44011/v2/", Err: timeout}, errdefs.IsDeadlineExceeded, "deadline exceeded"},
		{"a kind from the store is kept", fmt.Errorf("pull: image store index is corrupt: %w", errdefs.ErrDataLoss), func(err error) bool { return errdefs.IsDataLoss(err) && !errdefs.IsUnavailable(err) }, "data loss"},
		{"plain HTTP", &url.Error{Op: "Get", URL: "https://127.0.0.1:44011/v2/", Err: &PlainHTTPError{Host: "127.0.0.1:44011"}}, errdefs.IsUnavailable, "unavailable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := registryError(tc.err)
			if !tc.is(got) {
				t.Errorf("registryError(%v) = %v, want %s", tc.err, got, tc.kind)
			}
			if tc.kind != "permission denied" && errdefs.IsPermissionDenied(got) {
				t.Errorf("registryError(%v) says permission denied", tc.err)
			}
		})
	}
	var te *TimeoutError
	if !errors.As(registryError(&url.Error{Err: timeout}), &te) || te != timeout {
		t.Errorf("a TimeoutError is not kept through registryError")
	}
}

// TestTransportPhases drives the registry transport against servers that
// stall in the TLS handshake or answer HTTPS in plain HTTP.
func TestTransportPhases(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var mu sync.Mutex
	var held []net.Conn
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // never answers the ClientHello
			mu.Unlock()
		}
	}()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer plain.Close()
	plainHost := strings.TrimPrefix(plain.URL, "http://")

	// 3 s: the plain HTTP server must answer within it on a loaded machine.
	client := &http.Client{Transport: registryTransport(Timeouts{Connect: 3 * time.Second, Response: 3 * time.Second})}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	get := func(u string) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}

	err = get("https://" + silent.Addr().String() + "/v2/")
	var te *TimeoutError
	if !errors.As(err, &te) || te.Phase != PhaseTLSHandshake || te.Host != silent.Addr().String() || !errdefs.IsDeadlineExceeded(err) {
		t.Errorf("TLS handshake to a silent server: err = %v, want a TLS handshake TimeoutError", err)
	} else if !strings.Contains(err.Error(), flagConnectTimeout) {
		t.Errorf("error does not name %s: %v", flagConnectTimeout, err)
	}

	err = get("https://" + plainHost + "/v2/")
	var pe *PlainHTTPError
	if !errors.As(err, &pe) || pe.Host != plainHost || !strings.Contains(err.Error(), "--plain-http") {
		t.Errorf("HTTPS to a plain HTTP server: err = %v, want a PlainHTTPError naming --plain-http", err)
	}

	if err := get(plain.URL + "/v2/"); err != nil {
		t.Errorf("plain HTTP request through the transport: %v", err)
	}
}

// TestStreamErrorKinds checks which kind wins when a layer stream fails:
// a failure of the source below (a registry timeout, a limit, a cancelled
// pull) keeps its own kind, a stream that is not gzip, zstd or tar is
// ErrInvalidArgument; the cause stays wrapped either way.
func TestStreamErrorKinds(t *testing.T) {
	timeout := &TimeoutError{Host: "127.0.0.1:44011", Phase: PhaseBodyRead, Limit: time.Second, Flag: flagResponseTimeout}
	gz := []byte{0x1f, 0x8b}
	tests := []struct {
		name string
		src  io.Reader
		is   func(error) bool
		code codes.Code
	}{
		{"corrupt gzip header", bytes.NewReader(append(gz, "not a gzip header at all"...)), errdefs.IsInvalidArgument, codes.InvalidArgument},
		{"registry timeout inside the gzip header", io.MultiReader(bytes.NewReader(gz), iotest.ErrReader(timeout)), errdefs.IsDeadlineExceeded, codes.DeadlineExceeded},
		{"cancelled pull inside the gzip header", io.MultiReader(bytes.NewReader(gz), iotest.ErrReader(fmt.Errorf("read body: %w", context.Canceled))), errdefs.IsCanceled, codes.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decompress(tc.src, "sha256:0000")
			if !tc.is(err) {
				t.Fatalf("decompress: err = %v, want %s", err, tc.code)
			}
			if got := status.Code(errgrpc.ToGRPC(err)); got != tc.code {
				t.Errorf("gRPC code of %v = %s, want %s", err, got, tc.code)
			}
			if tc.code != codes.InvalidArgument && errdefs.IsInvalidArgument(err) {
				t.Errorf("%v blames the stream for a failure of its source", err)
			}
		})
	}
	var te *TimeoutError
	_, err := decompress(io.MultiReader(bytes.NewReader(gz), iotest.ErrReader(timeout)), "sha256:0000")
	if !errors.As(err, &te) || te != timeout {
		t.Errorf("the TimeoutError is not kept as the cause of %v", err)
	}
}
