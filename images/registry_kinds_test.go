package images_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	orasErrdef "oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/fixtures"
)

// portsHolding401 lists, in random order, the TCP ports whose decimal form
// holds "401": a classification by message text mistakes their URLs for a
// 401 Unauthorized.
func portsHolding401() []int {
	var ports []int
	for p := 1024; p < 65536; p++ {
		if strings.Contains(strconv.Itoa(p), "401") {
			ports = append(ports, p)
		}
	}
	rand.Shuffle(len(ports), func(i, j int) { ports[i], ports[j] = ports[j], ports[i] })
	return ports
}

// listen401 listens on 127.0.0.1 on a free port holding "401".
func listen401(t *testing.T) net.Listener {
	t.Helper()
	for _, p := range portsHolding401() {
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
			return l
		}
	}
	t.Skip("no free TCP port holding 401 on 127.0.0.1")
	return nil
}

// refused401 binds, without listening, a socket on a free port holding
// "401" for the test's lifetime: connections to it are refused by the
// kernel and no other process can take the port meanwhile.
func refused401(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	for _, p := range portsHolding401() {
		if unix.Bind(fd, &unix.SockaddrInet4{Port: p, Addr: [4]byte{127, 0, 0, 1}}) == nil {
			return "127.0.0.1:" + strconv.Itoa(p)
		}
	}
	t.Skip("no free TCP port holding 401 on 127.0.0.1")
	return ""
}

// TestRegistryStatusKinds pulls from a real registry listening on a port
// whose number holds "401", behind a front that answers chosen statuses
// for some repositories, and checks the kind of each failure by type:
// errors.Is for the errdefs kind, the gRPC code containerd would see, and
// errors.As for the registry's own error (kept as the cause). A
// classification by message text calls the 404 and the 500 here
// "permission denied", because the URL holds the port.
func TestRegistryStatusKinds(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t, "", "")
	img, err := images.BuildWasmImage(ctx, fixtures.Hello, "hello.wasm")
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Push(ctx, reg.host+"/app/hello:1", noCreds(t)); err != nil {
		t.Fatal(err)
	}

	// The front: /v2/status/<code>/... answers <code> with a registry error
	// body, everything else goes to the real registry.
	l := listen401(t)
	front := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rest, ok := strings.CutPrefix(r.URL.Path, "/v2/status/"); ok {
			code, _ := strconv.Atoi(strings.SplitN(rest, "/", 2)[0])
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			w.Write([]byte(`{"errors":[{"code":"TEST","message":"status ` + strconv.Itoa(code) + ` from the test front"}]}`))
			return
		}
		reg.srv.Config.Handler.ServeHTTP(w, r)
	})}
	go front.Serve(l)
	t.Cleanup(func() { front.Close() })
	host := l.Addr().String()
	refused := refused401(t)

	tests := []struct {
		name   string
		ref    string
		is     func(error) bool
		code   codes.Code
		status int  // the *errcode.ErrorResponse kept as the cause; 0: none
		opErr  bool // a *net.OpError kept as the cause
	}{
		{"image pulls", host + "/app/hello:1", nil, codes.OK, 0, false},
		{"real 404: missing tag", host + "/app/hello:absent", errdefs.IsNotFound, codes.NotFound, 0, false},
		{"real 404: missing repository", host + "/app/nothing:1", errdefs.IsNotFound, codes.NotFound, 0, false},
		{"401", host + "/status/401/app:1", errdefs.IsPermissionDenied, codes.PermissionDenied, http.StatusUnauthorized, false},
		{"403", host + "/status/403/app:1", errdefs.IsPermissionDenied, codes.PermissionDenied, http.StatusForbidden, false},
		{"429", host + "/status/429/app:1", errdefs.IsUnavailable, codes.Unavailable, http.StatusTooManyRequests, false},
		{"500", host + "/status/500/app:1", errdefs.IsUnavailable, codes.Unavailable, http.StatusInternalServerError, false},
		{"connection refused", refused + "/app/hello:1", errdefs.IsUnavailable, codes.Unavailable, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(tc.ref, "401") {
				t.Fatalf("reference %s does not hold 401", tc.ref)
			}
			s := openStore(t)
			_, err := s.Pull(ctx, tc.ref, noCreds(t))
			if tc.is == nil {
				if err != nil {
					t.Fatalf("pull: %v", err)
				}
				return
			}
			if !tc.is(err) {
				t.Fatalf("pull %s: err = %v, want %s", tc.ref, err, tc.code)
			}
			if tc.code != codes.PermissionDenied && errdefs.IsPermissionDenied(err) {
				t.Errorf("pull %s: %v says permission denied", tc.ref, err)
			}
			if got := status.Code(errgrpc.ToGRPC(err)); got != tc.code {
				t.Errorf("gRPC code of %v = %s, want %s", err, got, tc.code)
			}
			var resp *errcode.ErrorResponse
			switch {
			case tc.status != 0 && (!errors.As(err, &resp) || resp.StatusCode != tc.status):
				t.Errorf("the registry's response (%d) is not kept as the cause of %v", tc.status, err)
			case tc.code == codes.NotFound && !errors.Is(err, orasErrdef.ErrNotFound):
				t.Errorf("oras's not-found error is not kept as the cause of %v", err)
			}
			var op *net.OpError
			if tc.opErr && (!errors.As(err, &op) || !errors.Is(err, unix.ECONNREFUSED)) {
				t.Errorf("the dial error is not kept as the cause of %v", err)
			}
			assertStoreEmpty(t, s)
		})
	}
}
