package images_test

// Hostile registries and hostile layers: a registry that never answers or
// stalls mid-download, decompression bombs, and a pull killed mid-layer.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

// testDeadline bounds every pull below: a pull the timeouts fail to stop
// ends with context.DeadlineExceeded instead of hanging the test, and that
// error is not the TimeoutError the tests want.
const testDeadline = 2 * time.Minute

// layerImage builds a Linux image whose only layer is blob.
func layerImage(t testing.TB, mediaType string, blob []byte) *images.MemoryImage {
	t.Helper()
	img, err := images.BuildImage(images.ImageSpec{
		Config: ocispec.Image{
			Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
			Config:   ocispec.ImageConfig{Entrypoint: []string{"/bin/true"}},
			RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(blob)}},
		},
		Layers: []images.Layer{{MediaType: mediaType, Data: blob}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// pushImage pushes img to reg as ref and returns its only layer's digest.
func pushImage(t *testing.T, reg string, ref string, img *images.MemoryImage) digest.Digest {
	t.Helper()
	if err := img.Push(context.Background(), reg+"/"+ref, images.WithDockerConfig(emptyDockerConfig(t))); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return manifestOf(t, img).Layers[0].Digest
}

func emptyDockerConfig(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tarHeader returns the raw tar header block(s) of one entry.
func tarHeader(t testing.TB, h *tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := tar.NewWriter(&b).WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// bombTar streams the tar of one file of size zero bytes, written as
// header, then the zero data in 1 MiB chunks, then the end-of-archive
// blocks. size is a multiple of 1 MiB, so no padding is needed.
func bombParts(t testing.TB, size int64) (header []byte, chunks int64, trailer []byte) {
	return tarHeader(t, &tar.Header{Name: "bomb", Mode: 0o644, Size: size, Typeflag: tar.TypeReg, Format: tar.FormatGNU}),
		size >> 20, make([]byte, 1024)
}

// gzipBomb is a gzip layer of a size-byte file of zeros, made of gzip
// members (one per MiB, all the same) so it is cheap to build: 4 GiB is
// about 4 MiB of gzip.
func gzipBomb(t testing.TB, size int64) []byte {
	gz := func(b []byte) []byte {
		var out bytes.Buffer
		w, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
		w.Write(b)
		w.Close()
		return out.Bytes()
	}
	header, chunks, trailer := bombParts(t, size)
	zero := gz(make([]byte, 1<<20))
	out := bytes.NewBuffer(gz(header))
	for i := int64(0); i < chunks; i++ {
		out.Write(zero)
	}
	out.Write(gz(trailer))
	return out.Bytes()
}

// zstdBomb is gzipBomb with zstd frames.
func zstdBomb(t testing.TB, size int64) []byte {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	header, chunks, trailer := bombParts(t, size)
	zero := enc.EncodeAll(make([]byte, 1<<20), nil)
	out := bytes.NewBuffer(enc.EncodeAll(header, nil))
	for i := int64(0); i < chunks; i++ {
		out.Write(zero)
	}
	out.Write(enc.EncodeAll(trailer, nil))
	return out.Bytes()
}

// zstdWideWindow is a valid zstd frame of a small tar whose header asks for
// a 256 MiB window (Window_Descriptor exponent 18), holding one raw block.
func zstdWideWindow(t testing.TB) []byte {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: "hello", Mode: 0o644, Size: 5, Typeflag: tar.TypeReg})
	tw.Write([]byte("hello"))
	tw.Close()
	raw := tb.Bytes()
	frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 18 << 3}
	bh := uint32(1) | uint32(len(raw))<<3 // last block, raw, size
	frame = append(frame, byte(bh), byte(bh>>8), byte(bh>>16))
	return append(frame, raw...)
}

// sparseBomb is a gzip tar layer of one GNU sparse file (PAX format 0.1)
// of size bytes holding one byte of data: a few hundred bytes that a tar
// reader expands to size bytes, the holes read as zeros. Go's tar writer
// cannot write sparse files, so the PAX header is written by hand.
func sparseBomb(t testing.TB, size int64) []byte {
	var recs bytes.Buffer
	for _, kv := range [][2]string{{"GNU.sparse.major", "0"}, {"GNU.sparse.minor", "1"},
		{"GNU.sparse.size", fmt.Sprint(size)}, {"GNU.sparse.numblocks", "1"}, {"GNU.sparse.map", "0,1"}} {
		rec := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(rec) // the record's length counts its own digits
		for len(fmt.Sprint(n))+len(rec) != n {
			n = len(fmt.Sprint(n)) + len(rec)
		}
		fmt.Fprintf(&recs, "%d%s", n, rec)
	}
	// A ustar entry holding the records, retyped to a PAX header.
	x := tarHeader(t, &tar.Header{Name: "PaxHeaders/sparse", Mode: 0o644, Size: int64(recs.Len()), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR})
	x[156] = tar.TypeXHeader
	copy(x[148:156], "        ")
	sum := 0
	for _, c := range x[:512] {
		sum += int(c)
	}
	copy(x[148:156], fmt.Sprintf("%06o\x00 ", sum))
	var b bytes.Buffer
	b.Write(x)
	b.Write(recs.Bytes())
	b.Write(make([]byte, 511-(recs.Len()+511)%512))
	b.Write(tarHeader(t, &tar.Header{Name: "sparse", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}))
	b.Write([]byte{1})
	b.Write(make([]byte, 511+1024)) // padding, end of archive
	var out bytes.Buffer
	gw := gzip.NewWriter(&out)
	gw.Write(b.Bytes())
	gw.Close()
	// The reader must see a sparse file of size bytes.
	tr := tar.NewReader(bytes.NewReader(b.Bytes()))
	if h, err := tr.Next(); err != nil || h.Size != size {
		t.Fatalf("sparse tar: %v, size %d, want %d", err, h.Size, size)
	}
	return out.Bytes()
}

// gzipTar builds a gzip tar layer from fn's entries.
func gzipTar(t testing.TB, fn func(tw *tar.Writer)) []byte {
	var b bytes.Buffer
	gw := gzip.NewWriter(&b)
	tw := tar.NewWriter(gw)
	fn(tw)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	gw.Close()
	return b.Bytes()
}

// underFloor is the size of a legitimate layer of zeros: it compresses
// about 1,000:1 but stays under images.LayerRatioFloor.
const underFloor = 192 << 20

// TestLayerBombs pulls hostile layers from a real registry: each is refused
// with the limit and the layer named, and nothing is left in the store.
func TestLayerBombs(t *testing.T) {
	reg := newTestRegistry(t, "", "")
	// A 256 MiB window is valid zstd that an uncapped decoder accepts: the
	// cap is what refuses it.
	if d, err := zstd.NewReader(bytes.NewReader(zstdWideWindow(t))); err != nil {
		t.Fatal(err)
	} else if b, err := io.ReadAll(d); err != nil || len(b) == 0 {
		t.Fatalf("the wide-window frame does not decode without a cap: %v", err)
	} else {
		d.Close()
	}
	tests := []struct {
		name      string
		mediaType string
		blob      func(t testing.TB) []byte
		limits    images.Limits
		limit     string   // the LimitError's Limit
		fix       string   // what the message must name to raise it
		msg       []string // more the message must say
		ok        bool     // a legitimate layer: the pull succeeds
		long      bool     // inflates a gigabyte or more: skipped under -short
	}{
		{
			// The attack of issue 7: 4 MiB of gzip expanding to 4 GiB,
			// refused by the default ratio once past 256 MiB.
			name: "gzip bomb 4GiB default limits", mediaType: ocispec.MediaTypeImageLayerGzip,
			blob:  func(t testing.TB) []byte { return gzipBomb(t, 4<<30) },
			limit: images.LimitLayerRatio, fix: "--max-layer-ratio",
			msg: []string{"compression ratio", "limit 100:1", "256.0 MiB"},
		},
		{
			name: "zstd bomb default limits", mediaType: ocispec.MediaTypeImageLayerZstd,
			blob:  func(t testing.TB) []byte { return zstdBomb(t, 2<<30) },
			limit: images.LimitLayerRatio, fix: "--max-layer-ratio",
		},
		{
			// A sparse file's holes are written as zeros: a layer of a few
			// hundred bytes expanding to 1 GiB is caught by the ratio on
			// the bytes handed out, not the tar stream.
			name: "sparse file bomb default limits", mediaType: ocispec.MediaTypeImageLayerGzip,
			blob:  func(t testing.TB) []byte { return sparseBomb(t, 1<<30) },
			limit: images.LimitLayerRatio, fix: "--max-layer-ratio",
		},
		{
			name: "gzip bomb 4GiB over the size, no ratio", mediaType: ocispec.MediaTypeImageLayerGzip,
			blob:   func(t testing.TB) []byte { return gzipBomb(t, 4<<30) },
			limits: images.Limits{MaxLayerSize: 1 << 30, MaxLayerRatio: -1}, limit: images.LimitLayerSize, fix: "--max-layer-size",
			long: true,
		},
		{
			// Under the default 8 GiB limit, over it.
			name: "gzip bomb 9GiB default size limit", mediaType: ocispec.MediaTypeImageLayerGzip,
			blob:   func(t testing.TB) []byte { return gzipBomb(t, 9<<30) },
			limits: images.Limits{MaxLayerRatio: -1}, limit: images.LimitLayerSize, fix: "--max-layer-size",
			long: true,
		},
		{
			name: "zstd bomb over the size, no ratio", mediaType: ocispec.MediaTypeImageLayerZstd,
			blob:   func(t testing.TB) []byte { return zstdBomb(t, 2<<30) },
			limits: images.Limits{MaxLayerSize: 256 << 20, MaxLayerRatio: -1}, limit: images.LimitLayerSize, fix: "--max-layer-size",
		},
		{
			// A ratio of 1000:1 over a lower limit is refused as soon as
			// the layer passes the floor.
			name: "ratio limit lowered", mediaType: ocispec.MediaTypeImageLayerGzip,
			blob:   func(t testing.TB) []byte { return gzipBomb(t, 512<<20) },
			limits: images.Limits{MaxLayerRatio: 10}, limit: images.LimitLayerRatio, fix: "--max-layer-ratio",
			msg: []string{"limit 10:1"},
		},
		{
			// Legitimate: 192 MiB of zeros compresses 1000:1 but stays
			// under the floor, so the default ratio never looks at it.
			name: "zeros under the floor pass", mediaType: ocispec.MediaTypeImageLayerGzip,
			blob: func(t testing.TB) []byte { return gzipBomb(t, underFloor) },
			ok:   true,
		},
		{
			name: "zstd window", mediaType: ocispec.MediaTypeImageLayerZstd,
			blob:  zstdWideWindow,
			limit: images.LimitZstdWindow, fix: "zstd --long=27",
		},
		{
			// Files written one by one until the sum passes the limit: the
			// first ones are on disk when the limit hits.
			name: "many files over the size", mediaType: ocispec.MediaTypeImageLayerGzip,
			blob: func(t testing.TB) []byte {
				return gzipTar(t, func(tw *tar.Writer) {
					for i := 0; i < 16; i++ {
						tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d", i), Mode: 0o644, Size: 1 << 20, Typeflag: tar.TypeReg})
						tw.Write(make([]byte, 1<<20))
					}
				})
			},
			limits: images.Limits{MaxLayerSize: 4 << 20}, limit: images.LimitLayerSize, fix: "--max-layer-size",
		},
		{
			// Entries of no size whose PAX headers carry 1 MiB each: only
			// the count of the uncompressed stream catches them.
			name: "pax header flood", mediaType: ocispec.MediaTypeImageLayerGzip,
			blob: func(t testing.TB) []byte {
				big := strings.Repeat("x", 1000<<10)
				return gzipTar(t, func(tw *tar.Writer) {
					for i := 0; i < 40; i++ {
						tw.WriteHeader(&tar.Header{Name: "f", Mode: 0o644, Typeflag: tar.TypeReg, Format: tar.FormatPAX,
							PAXRecords: map[string]string{"comment": big}})
					}
				})
			},
			limits: images.Limits{MaxLayerSize: 16 << 20}, limit: images.LimitLayerSize, fix: "--max-layer-size",
		},
		{
			name: "entry count", mediaType: ocispec.MediaTypeImageLayerGzip,
			blob: func(t testing.TB) []byte {
				return gzipTar(t, func(tw *tar.Writer) {
					for i := 0; i < 3000; i++ {
						tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d/%d", i), Mode: 0o644, Typeflag: tar.TypeReg})
					}
				})
			},
			limits: images.Limits{MaxLayerEntries: 1000}, limit: images.LimitLayerEntries, fix: "--max-layer-entries",
		},
		{
			// A compressed blob over the limit is refused before download.
			name: "compressed blob over the limit", mediaType: ocispec.MediaTypeImageLayerGzip,
			blob:   func(t testing.TB) []byte { return gzipBomb(t, 64<<20) },
			limits: images.Limits{MaxLayerSize: 1 << 10}, limit: images.LimitLayerSize, fix: "--max-layer-size",
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.long && testing.Short() {
				t.Skip("inflates a gigabyte or more; -short runs unit tests only")
			}
			ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
			defer cancel()
			ref := fmt.Sprintf("bombs/b%d:v1", i)
			layer := pushImage(t, reg.host, ref, layerImage(t, tc.mediaType, tc.blob(t)))
			s := openStore(t)
			e, err := s.Pull(ctx, reg.host+"/"+ref, noCreds(t), images.WithLimits(tc.limits))
			if tc.ok {
				if err != nil {
					t.Fatalf("pull of a legitimate layer: %v", err)
				}
				// Unpacked in full.
				st, err := os.Stat(filepath.Join(s.RootfsPath(e.Manifest.Digest), "bomb"))
				if err != nil || st.Size() != underFloor {
					t.Fatalf("the unpacked layer's file: %v, want %d bytes", err, underFloor)
				}
				return
			}
			t.Logf("pull: %v", err)
			var le *images.LimitError
			if !errors.As(err, &le) || !errdefs.IsResourceExhausted(err) {
				t.Fatalf("pull of a bomb: err = %v, want a resource-exhausted LimitError", err)
			}
			if le.Limit != tc.limit || le.Layer != layer {
				t.Errorf("limit %q on layer %s, want %q on %s", le.Limit, le.Layer, tc.limit, layer)
			}
			for _, want := range append([]string{reg.host + "/" + ref, layer.String(), tc.fix}, tc.msg...) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not name %q: %v", want, err)
				}
			}
			assertStoreEmpty(t, s)
		})
	}
}

// stallProxy serves reg, but stops sending a blob named by stallDigest
// after half its bytes and holds the connection open until the test ends.
// started is closed once the first half has been sent.
func stallProxy(t testing.TB, reg *testRegistry, stallDigest digest.Digest) (host string, started chan struct{}) {
	t.Helper()
	u, _ := url.Parse(reg.srv.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	stop := make(chan struct{})
	started = make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, stallDigest.String()) {
			rp.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Header().Set("Docker-Content-Digest", stallDigest.String())
		w.WriteHeader(http.StatusOK)
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		once.Do(func() { close(started) })
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(stop) }) // runs first: unblocks the handlers
	pu, _ := url.Parse(srv.URL)
	return pu.Host, started
}

// fullBacklog listens with a backlog of 0 and fills it, so further TCP
// connects get no answer (the kernel drops their SYNs). It returns "" when
// this kernel answers anyway.
func fullBacklog(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err != nil {
			return addr // this connect got no answer: the backlog is full
		}
		t.Cleanup(func() { c.Close() })
	}
	return ""
}

// TestRegistryTimeouts pulls from registries that never answer: each pull
// fails with a TimeoutError naming the registry, the phase and the flag,
// well before the test's own deadline.
func TestRegistryTimeouts(t *testing.T) {
	reg := newTestRegistry(t, "", "")
	img := layerImage(t, ocispec.MediaTypeImageLayerGzip, gzipTar(t, func(tw *tar.Writer) {
		tw.WriteHeader(&tar.Header{Name: "big", Mode: 0o644, Size: 1 << 20, Typeflag: tar.TypeReg})
		tw.Write(bytes.Repeat([]byte("0123456789abcdef"), 1<<16))
	}))
	layer := pushImage(t, reg.host, "app/stall:v1", img)
	stall, _ := stallProxy(t, reg, layer)

	// Where the registry answers some requests (the stalling one serves the
	// manifest and config), the timeout leaves room for a loaded machine.
	tests := []struct {
		name    string
		host    func(t testing.TB) string
		phase   string
		flag    string
		timeout time.Duration
	}{
		{"silent registry", testenv.SilentListener, images.PhaseResponseHeader, "--registry-timeout", time.Second},
		{"stalls mid-body", func(testing.TB) string { return stall }, images.PhaseBodyRead, "--registry-timeout", 5 * time.Second},
		{"connect never completes", fullBacklog, images.PhaseConnect, "--registry-connect-timeout", time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			host := tc.host(t)
			if host == "" {
				t.Skip("this kernel answers connects past a full listen backlog")
			}
			ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
			defer cancel()
			s := openStore(t)
			timeouts := images.Timeouts{Connect: tc.timeout, Response: tc.timeout}
			_, err := s.Pull(ctx, host+"/app/stall:v1", noCreds(t), images.WithTimeouts(timeouts))
			var te *images.TimeoutError
			if !errors.As(err, &te) || !errdefs.IsDeadlineExceeded(err) {
				t.Fatalf("err = %v, want a deadline-exceeded TimeoutError", err)
			}
			if ctx.Err() != nil {
				t.Fatalf("the pull ran into the test's deadline: %v", err)
			}
			if te.Host != host || te.Phase != tc.phase || te.Limit != tc.timeout {
				t.Errorf("timeout = %+v, want host %s phase %q after %v", te, host, tc.phase, tc.timeout)
			}
			for _, want := range []string{host, tc.phase, tc.flag} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not name %q: %v", want, err)
				}
			}
			assertStoreEmpty(t, s)
		})
	}
}

// TestPullKilledMidLayer kills (SIGKILL) a process pulling from a registry
// that stalls mid-layer: while it lives, opening the store keeps its
// staging; once it is dead, opening the store removes it.
func TestPullKilledMidLayer(t *testing.T) {
	if os.Getenv("KUASAR_TEST_PULL_STORE") != "" {
		t.Skip("helper mode: see TestPullHelperProcess")
	}
	reg := newTestRegistry(t, "", "")
	img := layerImage(t, ocispec.MediaTypeImageLayerGzip, gzipTar(t, func(tw *tar.Writer) {
		tw.WriteHeader(&tar.Header{Name: "big", Mode: 0o644, Size: 4 << 20, Typeflag: tar.TypeReg})
		for i := 0; i < 4<<10; i++ {
			tw.Write([]byte(fmt.Sprintf("%01023d\n", i)))
		}
	}))
	layer := pushImage(t, reg.host, "app/killed:v1", img)
	host, started := stallProxy(t, reg, layer)
	root := filepath.Join(t.TempDir(), "store")
	if _, err := images.OpenStore(root); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestPullHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "KUASAR_TEST_PULL_STORE="+root, "KUASAR_TEST_PULL_REF="+host+"/app/killed:v1",
		"DOCKER_CONFIG="+filepath.Dir(emptyDockerConfig(t)))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	select {
	case <-started:
	case <-time.After(testDeadline):
		t.Fatalf("the helper never reached the layer:\n%s", out.String())
	}
	staging := stagingFiles(t, root)
	if len(staging) == 0 {
		t.Fatal("no staging under ingest/ while the pull is downloading the layer")
	}
	// A live pull's staging survives another process opening the store.
	if _, err := images.OpenStore(root); err != nil {
		t.Fatal(err)
	}
	if got := stagingFiles(t, root); len(got) < len(staging) {
		t.Fatalf("opening the store removed a live pull's staging: before %v, after %v", staging, got)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed = true
	cmd.Wait()
	if got := stagingFiles(t, root); len(got) == 0 {
		t.Fatal("the killed pull left nothing to clean: the test proves nothing")
	}
	s, err := images.OpenStore(root)
	if err != nil {
		t.Fatal(err)
	}
	if got := stagingFiles(t, root); len(got) != 0 {
		t.Errorf("staging of the killed pull survived the next store open: %v", got)
	}
	assertStoreEmpty(t, s)
}

// stagingFiles lists everything under the store's ingest/.
func stagingFiles(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	filepath.Walk(filepath.Join(root, "ingest"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && p != filepath.Join(root, "ingest") {
			out = append(out, strings.TrimPrefix(p, root))
		}
		return nil
	})
	return out
}

// TestPullHelperProcess is the pull TestPullKilledMidLayer kills; it does
// nothing in a normal test run.
func TestPullHelperProcess(t *testing.T) {
	root := os.Getenv("KUASAR_TEST_PULL_STORE")
	if root == "" {
		t.Skip("helper process of TestPullKilledMidLayer")
	}
	s, err := images.OpenStore(root)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Pull(context.Background(), os.Getenv("KUASAR_TEST_PULL_REF"))
	t.Fatalf("the pull returned (%v): it should have been killed mid-layer", err)
}

// TestMetadataLimits feeds metadata over the 4 MiB limit: a config blob
// from a registry (refused before it is downloaded) and an index.json of a
// layout (refused after reading 4 MiB of it).
func TestMetadataLimits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	reg := newTestRegistry(t, "", "")
	img, err := images.BuildImage(images.ImageSpec{Config: map[string]string{"pad": strings.Repeat("x", 5<<20)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Push(ctx, reg.host+"/app/fatconfig:v1", noCreds(t)); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	_, err = s.Pull(ctx, reg.host+"/app/fatconfig:v1", noCreds(t))
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "4194304 byte limit") {
		t.Errorf("pull of a 5 MiB config: err = %v, want resource exhausted naming the limit", err)
	}
	assertStoreEmpty(t, s)

	small, err := images.BuildImage(images.ImageSpec{Config: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	if err := small.WriteLayout(dir, "example.com/app:v1"); err != nil {
		t.Fatal(err)
	}
	idx := filepath.Join(dir, "index.json")
	b, err := os.ReadFile(idx)
	if err != nil {
		t.Fatal(err)
	}
	// Valid JSON still: trailing whitespace.
	if err := os.WriteFile(idx, append(b, bytes.Repeat([]byte(" "), 5<<20)...), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(ctx, dir, ""); !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "index.json") {
		t.Errorf("import of a 5 MiB index.json: err = %v, want resource exhausted naming index.json", err)
	}
	assertStoreEmpty(t, s)
}
