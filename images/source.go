package images

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	orasErrdef "oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Option configures Resolve, Pull, Import and Push.
type Option func(*options)

type options struct {
	plainHTTP    bool
	dockerConfig string
	progress     io.Writer
	client       *http.Client
	timeouts     Timeouts
	limits       Limits
}

// WithPlainHTTP talks plain HTTP to the registry. Registries on localhost,
// 127.0.0.1 and [::1] get plain HTTP without it.
func WithPlainHTTP(plain bool) Option { return func(o *options) { o.plainHTTP = plain } }

// WithDockerConfig reads registry credentials from this docker config.json
// instead of $DOCKER_CONFIG/config.json or ~/.docker/config.json.
func WithDockerConfig(path string) Option { return func(o *options) { o.dockerConfig = path } }

// WithProgress prints per-blob download progress to w (meant for a
// terminal; nil disables it).
func WithProgress(w io.Writer) Option { return func(o *options) { o.progress = w } }

// withHTTPClient sets the HTTP client used to reach registries.
func withHTTPClient(c *http.Client) Option { return func(o *options) { o.client = c } }

func newOptions(opts []Option) *options {
	o := &options{}
	for _, f := range opts {
		f(o)
	}
	return o
}

// SourceKind says where a target string points.
type SourceKind string

// The sources Resolve understands.
const (
	// SourceWasmFile is a file starting with the Wasm magic "\0asm".
	SourceWasmFile SourceKind = "wasm-file"
	// SourceLayout is an OCI image layout directory (it has an oci-layout file).
	SourceLayout SourceKind = "oci-layout"
	// SourceArchive is an OCI image layout in a tar file (ctr images export).
	SourceArchive SourceKind = "oci-archive"
	// SourceRegistry is an image reference in a registry.
	SourceRegistry SourceKind = "registry"
)

// Target is a parsed target string.
type Target struct {
	// Kind is the source kind.
	Kind SourceKind
	// Path is the file or directory for local sources.
	Path string
	// Ref selects an image inside a layout or archive (PATH:REF), or is the
	// normalized registry reference.
	Ref string
}

// ParseTarget decides what target names. An existing file is a Wasm module
// when it starts with "\0asm" (whatever its name) and an OCI archive when it
// is a tar file; an existing directory must be an OCI layout. PATH:REF picks
// one image from a layout or archive. Anything else is a registry reference
// (docker.io/library is implied as usual).
func ParseTarget(target string) (Target, error) {
	if target == "" {
		return Target{}, fmt.Errorf("empty target: give a .wasm file, an OCI layout or archive, or an image reference: %w", errdefs.ErrInvalidArgument)
	}
	if t, ok, err := localTarget(target, ""); ok || err != nil {
		return t, err
	}
	// PATH:REF, where REF may itself hold colons (PATH:host:5000/name:tag).
	for i := 1; i < len(target); i++ {
		if target[i] != ':' {
			continue
		}
		if t, ok, err := localTarget(target[:i], target[i+1:]); ok || err != nil {
			return t, err
		}
	}
	if strings.HasPrefix(target, "/") || strings.HasPrefix(target, "./") || strings.HasPrefix(target, "../") ||
		strings.HasSuffix(target, ".wasm") || strings.HasSuffix(target, ".tar") {
		return Target{}, fmt.Errorf("%s: no such file or directory (and it is not an image reference): %w", target, errdefs.ErrNotFound)
	}
	named, err := reference.ParseDockerRef(target)
	if err != nil {
		return Target{}, fmt.Errorf("%q is not a file, an OCI layout or a valid image reference (%w): %w", target, err, errdefs.ErrInvalidArgument)
	}
	return Target{Kind: SourceRegistry, Ref: named.String()}, nil
}

func localTarget(p, ref string) (Target, bool, error) {
	st, err := os.Stat(p)
	if err != nil {
		return Target{}, false, nil
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return Target{}, true, err
	}
	if st.IsDir() {
		if _, err := os.Stat(filepath.Join(p, ocispec.ImageLayoutFile)); err != nil {
			return Target{}, true, fmt.Errorf("directory %s is not an OCI image layout (no %s file): give a layout directory, an OCI archive, a .wasm file or a reference: %w", p, ocispec.ImageLayoutFile, errdefs.ErrInvalidArgument)
		}
		return Target{Kind: SourceLayout, Path: abs, Ref: ref}, true, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return Target{}, true, err
	}
	defer f.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	switch {
	case isWasm(head):
		if ref != "" {
			return Target{}, true, fmt.Errorf("%s is a Wasm module: it cannot be followed by :%s: %w", p, ref, errdefs.ErrInvalidArgument)
		}
		return Target{Kind: SourceWasmFile, Path: abs}, true, nil
	case n >= 262 && bytes.HasPrefix(head[257:], []byte("ustar")):
		return Target{Kind: SourceArchive, Path: abs, Ref: ref}, true, nil
	case n >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return Target{}, true, fmt.Errorf("%s is gzip-compressed: decompress it (gunzip) to get an OCI archive: %w", p, errdefs.ErrInvalidArgument)
	}
	return Target{}, true, fmt.Errorf("%s is not a WebAssembly module (it does not start with \\0asm) nor an OCI archive (tar): build the module for wasm32-wasi, or export the image with ctr images export: %w", p, errdefs.ErrInvalidArgument)
}

// loadWasmFile reads a bare Wasm module file into a Workload. The module is
// only checked for the "\0asm" magic: the engine validates it on compile.
func loadWasmFile(p string) (*Workload, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read wasm module: %w", err)
	}
	if !isWasm(b) {
		return nil, fmt.Errorf("%s is not a Wasm module (it does not start with \\0asm): %w", p, errdefs.ErrInvalidArgument)
	}
	return &Workload{
		Reference:    p,
		Metadata:     Metadata{Kind: KindWasm, Annotations: map[string]string{}},
		Module:       b,
		ModuleDigest: digest.FromBytes(b),
		Args:         []string{filepath.Base(p)},
	}, nil
}

// Resolve turns target (see ParseTarget) into a runnable Workload. Images
// from layouts and archives are imported into the store; registry images
// are pulled unless the store already has the reference.
func (s *Store) Resolve(ctx context.Context, target string, opts ...Option) (*Workload, error) {
	t, err := ParseTarget(target)
	if err != nil {
		return nil, err
	}
	var e Entry
	switch t.Kind {
	case SourceWasmFile:
		return loadWasmFile(t.Path)
	case SourceLayout, SourceArchive:
		e, err = s.Import(ctx, t.Path, t.Ref, opts...)
	case SourceRegistry:
		e, err = s.Get(ctx, t.Ref)
		if errors.Is(err, errdefs.ErrNotFound) {
			e, err = s.Pull(ctx, t.Ref, opts...)
		}
	}
	if err != nil {
		return nil, err
	}
	w, err := s.Workload(ctx, e)
	if err != nil {
		return nil, err
	}
	w.Reference = target
	return w, nil
}

// Workload builds the Workload of a stored image: its module (Wasm images),
// rootfs, argv, environment and metadata. Blobs are re-verified as they are
// read.
func (s *Store) Workload(ctx context.Context, e Entry) (*Workload, error) {
	img, err := loadImage(ctx, s, e.Manifest)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", e.Name, err)
	}
	md, err := detect(ctx, s, img)
	if err != nil {
		return nil, err
	}
	w := &Workload{
		Reference:      e.Name,
		ManifestDigest: e.Manifest.Digest,
		Metadata:       md,
		Args:           img.args(),
		Entrypoint:     img.Config.Config.Entrypoint,
		Env:            img.Config.Config.Env,
		WorkingDir:     img.Config.Config.WorkingDir,
	}
	if e.Rootfs {
		w.Rootfs = s.RootfsPath(e.Manifest.Digest)
		if _, err := os.Stat(w.Rootfs); err != nil {
			return nil, fmt.Errorf("rootfs of image %s is missing from the store (%w): pull it again: %w", e.Name, err, errdefs.ErrNotFound)
		}
	}
	if md.Kind == KindWasm {
		m, err := moduleFromLoaded(ctx, s, img, w.Rootfs)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", e.Name, err)
		}
		w.Module, w.Function = m.Bytes, m.Function
		w.ModuleDigest = digest.FromBytes(m.Bytes)
		if len(w.Args) == 0 {
			w.Args = []string{moduleName(img)}
		}
	}
	return w, nil
}

// moduleName names the module of an image without an entrypoint (artifacts).
func moduleName(img *Image) string {
	for _, l := range img.Manifest.Layers {
		if isWasmLayer(l.MediaType) && l.Annotations[ocispec.AnnotationTitle] != "" {
			return path.Base(l.Annotations[ocispec.AnnotationTitle])
		}
	}
	return "module.wasm"
}

// Pull fetches the registry image ref (normalized as docker does) into the
// store, verifying every blob, and names it. Concurrent pulls of the same
// reference in this process share one download.
func (s *Store) Pull(ctx context.Context, ref string, opts ...Option) (Entry, error) {
	o := newOptions(opts)
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return Entry{}, fmt.Errorf("image reference %q: %w: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	name := named.String()
	v, err, _ := s.group.Do("pull\x00"+name, func() (any, error) {
		repo, tag, err := newRepository(named, o)
		if err != nil {
			return Entry{}, err
		}
		desc, err := repo.Resolve(ctx, tag)
		if err != nil {
			return Entry{}, fmt.Errorf("resolve %s: %w", name, registryError(err))
		}
		e, err := s.importImage(ctx, repo, desc, name, o)
		if err != nil {
			return Entry{}, fmt.Errorf("pull %s: %w", name, registryError(err))
		}
		return e, nil
	})
	if err != nil {
		return Entry{}, err
	}
	return v.(Entry), nil
}

// registryError maps oras/HTTP errors to errdefs kinds by their types and
// status codes (never by their text: a port such as :44011 holds "401").
// An error that already carries a kind (a TimeoutError, a LimitError, a
// PlainHTTPError, a context error, a kind from the store) keeps it; the
// registry's error stays wrapped, so errors.As still finds its
// *errcode.ErrorResponse or *net.OpError.
func registryError(err error) error {
	var resp *errcode.ErrorResponse
	switch {
	case hasKind(err):
		return err
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		return fmt.Errorf("%w: log in (docker login, or put credentials in ~/.docker/config.json): %w", err, errdefs.ErrPermissionDenied)
	case errors.As(err, &resp):
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			return fmt.Errorf("%w: log in (docker login, or put credentials in ~/.docker/config.json): %w", err, errdefs.ErrPermissionDenied)
		case http.StatusForbidden:
			return fmt.Errorf("%w: the credentials in the docker config.json do not grant access to this repository: %w", err, errdefs.ErrPermissionDenied)
		case http.StatusNotFound:
			return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
		case http.StatusTooManyRequests:
			return fmt.Errorf("%w: the registry is rate-limiting this client, try again later or log in: %w", err, errdefs.ErrUnavailable)
		}
	case errors.Is(err, orasErrdef.ErrNotFound):
		return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	case errors.Is(err, orasErrdef.ErrSizeExceedsLimit):
		return fmt.Errorf("%w: %w", err, errdefs.ErrResourceExhausted)
	}
	return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
}

// hasKind reports whether err carries an errdefs kind (or a context error)
// anywhere in its tree: errgrpc.ToGRPC would map it to that kind's code,
// so a wrapper must not add a second kind that contradicts it.
func hasKind(err error) bool {
	return errdefs.IsUnknown(err) || !errors.Is(errdefs.Resolve(err), errdefs.ErrUnknown)
}

// isLoopbackHost reports whether host[:port] is localhost or a loopback IP.
func isLoopbackHost(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// newRepository opens the oras repository of named with credentials from the
// docker config; it returns the tag or digest to resolve.
func newRepository(named reference.Named, o *options) (*remote.Repository, string, error) {
	host := reference.Domain(named)
	regHost := host
	if host == "docker.io" {
		regHost = "registry-1.docker.io"
	}
	ref := regHost + "/" + reference.Path(named)
	tag := "latest"
	if c, ok := named.(reference.Canonical); ok {
		tag = c.Digest().String()
	} else if t, ok := named.(reference.Tagged); ok {
		tag = t.Tag()
	}
	repo, err := remote.NewRepository(ref)
	if err != nil {
		return nil, "", fmt.Errorf("image reference %s: %w: %w", named, err, errdefs.ErrInvalidArgument)
	}
	repo.PlainHTTP = o.plainHTTP || isLoopbackHost(host)
	var store credentials.Store
	if o.dockerConfig != "" {
		store, err = credentials.NewStore(o.dockerConfig, credentials.StoreOptions{})
	} else {
		store, err = credentials.NewStoreFromDocker(credentials.StoreOptions{})
	}
	if err != nil {
		return nil, "", fmt.Errorf("read registry credentials (docker config): %w: fix or remove the config file: %w", err, errdefs.ErrInvalidArgument)
	}
	client := &auth.Client{Cache: auth.NewCache(), Credential: credentials.Credential(store)}
	if o.client != nil {
		client.Client = o.client
	} else {
		client.Client = &http.Client{Transport: registryTransport(o.timeouts)}
	}
	client.SetUserAgent("kuasar-go")
	repo.Client = client
	return repo, tag, nil
}

// importImage stages the image target names from src (index, manifest,
// config, layers), unpacks its tar layers, checks a Wasm image has a module,
// and only then commits it to the store under name.
func (s *Store) importImage(ctx context.Context, src fetcher, target ocispec.Descriptor, name string, o *options) (Entry, error) {
	t, err := s.newTxn(src, newProgress(o.progress))
	if err != nil {
		return Entry{}, err
	}
	defer t.abort()
	img, err := loadImage(ctx, t, target)
	if err != nil {
		return Entry{}, err
	}
	size := img.Descriptor.Size + img.Manifest.Config.Size
	hasTar := false
	lim := o.limits.withDefaults()
	for _, l := range img.Manifest.Layers {
		// A compressed layer is no larger than what it expands to: refuse
		// an oversized one before downloading it.
		if lim.MaxLayerSize >= 0 && l.Size > lim.MaxLayerSize {
			return Entry{}, &LimitError{Layer: l.Digest, Limit: LimitLayerSize, Max: lim.MaxLayerSize, Unit: "bytes", Fix: fixLayerSize}
		}
		if err := t.fetch(ctx, l); err != nil {
			return Entry{}, err
		}
		size += l.Size
		if !isWasmLayer(l.MediaType) {
			hasTar = true
		}
	}
	md, err := detect(ctx, t, img)
	if err != nil {
		return Entry{}, err
	}
	rootfs, rootfsTmp := "", ""
	if hasTar {
		rootfs = s.RootfsPath(img.Descriptor.Digest)
		if _, err := os.Stat(rootfs); err != nil {
			rootfsTmp = filepath.Join(t.dir, "rootfs")
			if err := os.Mkdir(rootfsTmp, 0o755); err != nil {
				return Entry{}, err
			}
			if err := unpackLayers(ctx, t, img.Manifest.Layers, rootfsTmp, lim); err != nil {
				return Entry{}, fmt.Errorf("unpack %s: %w", name, err)
			}
			rootfs = rootfsTmp
		}
	}
	if md.Kind == KindWasm {
		if _, err := moduleFromLoaded(ctx, t, img, rootfs); err != nil {
			return Entry{}, err
		}
	}
	e := Entry{Name: name, Target: target, Manifest: img.Descriptor, Kind: md.Kind, Shape: img.Shape, Size: size, Rootfs: hasTar}
	uses := []digest.Digest{target.Digest, img.Descriptor.Digest, img.Manifest.Config.Digest}
	for _, l := range img.Manifest.Layers {
		uses = append(uses, l.Digest)
	}
	if err := t.commit(ctx, e, rootfsTmp, uses); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// Import copies one image from an OCI layout directory or an OCI archive
// into the store. ref selects the image when the index names several (by
// io.containerd.image.name, org.opencontainers.image.ref.name or digest).
// The store name is the io.containerd.image.name annotation when present,
// else PATH or PATH:REF.
func (s *Store) Import(ctx context.Context, p, ref string, opts ...Option) (Entry, error) {
	o := newOptions(opts)
	abs, err := filepath.Abs(p)
	if err != nil {
		return Entry{}, err
	}
	v, err, _ := s.group.Do("import\x00"+abs+"\x00"+ref, func() (any, error) {
		src, err := openLocalSource(abs)
		if err != nil {
			return Entry{}, err
		}
		defer src.Close()
		idx, err := src.index()
		if err != nil {
			return Entry{}, err
		}
		desc, name, err := pickFromIndex(idx, ref, abs)
		if err != nil {
			return Entry{}, err
		}
		e, err := s.importImage(ctx, src, desc, name, o)
		if err != nil {
			return Entry{}, fmt.Errorf("import %s: %w", abs, err)
		}
		return e, nil
	})
	if err != nil {
		return Entry{}, err
	}
	return v.(Entry), nil
}

// pickFromIndex chooses the image ref names in a layout's index.json.
func pickFromIndex(idx *ocispec.Index, ref, where string) (ocispec.Descriptor, string, error) {
	nameOf := func(d ocispec.Descriptor) string {
		if n := d.Annotations[annotationContainerdImageName]; n != "" {
			return n
		}
		if n := d.Annotations[ocispec.AnnotationRefName]; strings.Contains(n, "/") {
			if named, err := reference.ParseDockerRef(n); err == nil {
				return named.String()
			}
		}
		if ref != "" {
			return where + ":" + ref
		}
		return where
	}
	var cands []ocispec.Descriptor
	if ref == "" {
		cands = idx.Manifests
	} else {
		norm := ref
		if named, err := reference.ParseDockerRef(ref); err == nil {
			norm = named.String()
		}
		for _, d := range idx.Manifests {
			cn := d.Annotations[annotationContainerdImageName]
			rn := d.Annotations[ocispec.AnnotationRefName]
			if cn == ref || cn == norm || rn == ref || rn == norm || d.Digest.String() == ref {
				cands = append(cands, d)
			}
		}
	}
	switch len(cands) {
	case 0:
		if ref == "" {
			return ocispec.Descriptor{}, "", fmt.Errorf("%s has no images in its index.json: %w", where, errdefs.ErrNotFound)
		}
		return ocispec.Descriptor{}, "", fmt.Errorf("%s has no image named %q (has %s): %w", where, ref, strings.Join(indexNames(idx), ", "), errdefs.ErrNotFound)
	case 1:
		return cands[0], nameOf(cands[0]), nil
	}
	// Several entries: platform variants of one image, or several images.
	names := map[string]bool{}
	for _, d := range cands {
		names[d.Annotations[annotationContainerdImageName]+"\x00"+d.Annotations[ocispec.AnnotationRefName]] = true
	}
	if len(names) > 1 {
		return ocispec.Descriptor{}, "", fmt.Errorf("%s holds several images (%s): pick one with %s:NAME: %w", where, strings.Join(indexNames(idx), ", "), where, errdefs.ErrInvalidArgument)
	}
	d, err := selectPlatform(cands)
	if err != nil {
		return ocispec.Descriptor{}, "", fmt.Errorf("%s: %w", where, err)
	}
	return d, nameOf(d), nil
}

func indexNames(idx *ocispec.Index) []string {
	var out []string
	for _, d := range idx.Manifests {
		n := d.Annotations[annotationContainerdImageName]
		if n == "" {
			n = d.Annotations[ocispec.AnnotationRefName]
		}
		if n == "" {
			n = d.Digest.String()
		}
		out = append(out, n)
	}
	return out
}

// localSource is an OCI layout directory or archive.
type localSource interface {
	fetcher
	index() (*ocispec.Index, error)
	Close() error
}

func openLocalSource(p string) (localSource, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("open image source: %w", err)
	}
	if st.IsDir() {
		return layoutSource(p), nil
	}
	return openArchive(p)
}

// layoutSource reads an OCI image layout directory.
type layoutSource string

func (l layoutSource) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("digest %q: %w: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	f, err := os.Open(filepath.Join(string(l), ocispec.ImageBlobsDir, desc.Digest.Algorithm().String(), desc.Digest.Encoded()))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("blob %s is missing from OCI layout %s: re-export the image: %w", desc.Digest, string(l), errdefs.ErrNotFound)
	}
	return f, err
}

func (l layoutSource) index() (*ocispec.Index, error) {
	f, err := os.Open(filepath.Join(string(l), ocispec.ImageIndexFile))
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", string(l), err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJSONBlob+1))
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", string(l), err)
	}
	if len(b) > maxJSONBlob {
		return nil, fmt.Errorf("index.json of OCI layout %s is over the %d byte limit on metadata: %w", string(l), maxJSONBlob, errdefs.ErrResourceExhausted)
	}
	return decodeIndex(b, string(l))
}

func (l layoutSource) Close() error { return nil }

func decodeIndex(b []byte, where string) (*ocispec.Index, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("index.json of %s: %w: %w", where, err, errdefs.ErrInvalidArgument)
	}
	return &idx, nil
}

// archiveSource reads an OCI layout inside an uncompressed tar file in place:
// it records where each member's data starts.
type archiveSource struct {
	f       *os.File
	path    string
	members map[string][2]int64 // name -> offset, size
}

func openArchive(p string) (*archiveSource, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	a := &archiveSource{f: f, path: p, members: map[string][2]int64{}}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("OCI archive %s is not a valid tar file: %w: %w", p, err, errdefs.ErrInvalidArgument)
		}
		if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeRegA {
			continue
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			f.Close()
			return nil, err
		}
		a.members[path.Clean(strings.TrimPrefix(h.Name, "./"))] = [2]int64{off, h.Size}
	}
	if _, ok := a.members[ocispec.ImageIndexFile]; !ok {
		f.Close()
		if _, ok := a.members["manifest.json"]; ok {
			return nil, fmt.Errorf("%s is a Docker archive (docker save) without an OCI index.json: export it as OCI (ctr images export, or docker save with containerd image store): %w", p, errdefs.ErrInvalidArgument)
		}
		return nil, fmt.Errorf("%s is a tar file but not an OCI archive (no index.json): %w", p, errdefs.ErrInvalidArgument)
	}
	return a, nil
}

func (a *archiveSource) member(name string) (io.ReadCloser, bool) {
	m, ok := a.members[name]
	if !ok {
		return nil, false
	}
	return io.NopCloser(io.NewSectionReader(a.f, m[0], m[1])), true
}

func (a *archiveSource) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("digest %q: %w: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	r, ok := a.member(path.Join(ocispec.ImageBlobsDir, desc.Digest.Algorithm().String(), desc.Digest.Encoded()))
	if !ok {
		return nil, fmt.Errorf("blob %s is missing from OCI archive %s: re-export the image: %w", desc.Digest, a.path, errdefs.ErrNotFound)
	}
	return r, nil
}

func (a *archiveSource) index() (*ocispec.Index, error) {
	r, _ := a.member(ocispec.ImageIndexFile)
	b, err := io.ReadAll(io.LimitReader(r, maxJSONBlob+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxJSONBlob {
		return nil, fmt.Errorf("index.json of OCI archive %s is over the %d byte limit on metadata: %w", a.path, maxJSONBlob, errdefs.ErrResourceExhausted)
	}
	return decodeIndex(b, a.path)
}

func (a *archiveSource) Close() error { return a.f.Close() }
