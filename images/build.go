package images

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/kuasar-go/kuasar/internal/atomicfile"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// epoch is the timestamp of every built layer entry and archive member, so
// that builds are reproducible byte for byte.
var epoch = time.Unix(0, 0).UTC()

// MemoryImage is a built image held in memory: its blobs by digest and the
// root descriptor (a manifest or an index). It is a Provider and a fetcher,
// so it can be inspected with ModuleFromImage, imported into a Store, written
// as an OCI layout or archive, or pushed.
type MemoryImage struct {
	// Root is the image's manifest (or index) descriptor.
	Root  ocispec.Descriptor
	blobs map[digest.Digest][]byte
	descs map[digest.Digest]ocispec.Descriptor
}

func newMemoryImage() *MemoryImage {
	return &MemoryImage{blobs: map[digest.Digest][]byte{}, descs: map[digest.Digest]ocispec.Descriptor{}}
}

func (m *MemoryImage) add(mediaType string, b []byte) ocispec.Descriptor {
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	m.blobs[d.Digest] = b
	m.descs[d.Digest] = d
	return d
}

func (m *MemoryImage) addJSON(mediaType string, v any) (ocispec.Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return m.add(mediaType, b), nil
}

// Blob returns the bytes of a blob of the image.
func (m *MemoryImage) Blob(d digest.Digest) ([]byte, bool) {
	b, ok := m.blobs[d]
	return b, ok
}

// SetBlob replaces the bytes stored under d without changing any
// descriptor. It exists to build corrupt images in tests.
func (m *MemoryImage) SetBlob(d digest.Digest, b []byte) { m.blobs[d] = b }

// ReaderAt implements Provider.
func (m *MemoryImage) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	b, ok := m.blobs[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", desc.Digest, errdefs.ErrNotFound)
	}
	return bytesReaderAt{b}, nil
}

// Fetch implements fetcher.
func (m *MemoryImage) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	b, ok := m.blobs[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", desc.Digest, errdefs.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// Layer is one layer of an image to build.
type Layer struct {
	// MediaType is the layer's media type (ocispec.MediaTypeImageLayer for a
	// tar, MediaTypeWasmLayer for a module).
	MediaType string
	// Data is the layer blob.
	Data []byte
	// Annotations go on the layer descriptor.
	Annotations map[string]string
}

// ImageSpec describes an image to build with BuildImage.
type ImageSpec struct {
	// ConfigMediaType defaults to ocispec.MediaTypeImageConfig.
	ConfigMediaType string
	// Config is marshalled as the config blob (an ocispec.Image, or any JSON
	// value for artifacts).
	Config any
	// Layers are the image layers, bottom first.
	Layers []Layer
	// ArtifactType is set on the manifest (artifacts only).
	ArtifactType string
	// Annotations go on the manifest.
	Annotations map[string]string
}

// BuildImage builds a single-manifest image from spec, in memory.
func BuildImage(spec ImageSpec) (*MemoryImage, error) {
	m := newMemoryImage()
	cmt := spec.ConfigMediaType
	if cmt == "" {
		cmt = ocispec.MediaTypeImageConfig
	}
	cfg, err := m.addJSON(cmt, spec.Config)
	if err != nil {
		return nil, fmt.Errorf("encode image config: %w", err)
	}
	man := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: spec.ArtifactType,
		Config:       cfg,
		Annotations:  spec.Annotations,
		Layers:       []ocispec.Descriptor{},
	}
	for _, l := range spec.Layers {
		d := m.add(l.MediaType, l.Data)
		d.Annotations = l.Annotations
		man.Layers = append(man.Layers, d)
	}
	root, err := m.addJSON(ocispec.MediaTypeImageManifest, man)
	if err != nil {
		return nil, err
	}
	if cfgImg, ok := spec.Config.(ocispec.Image); ok && cfgImg.Architecture != "" {
		root.Platform = &ocispec.Platform{OS: cfgImg.OS, Architecture: cfgImg.Architecture, Variant: cfgImg.Variant}
	}
	m.Root = root
	return m, nil
}

// buildIndex combines single-manifest images into a multi-platform image
// whose root is an OCI index; each entry keeps its platform.
func buildIndex(imgs ...*MemoryImage) (*MemoryImage, error) {
	m := newMemoryImage()
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	for _, img := range imgs {
		for d, b := range img.blobs {
			m.blobs[d] = b
			m.descs[d] = img.descs[d]
		}
		idx.Manifests = append(idx.Manifests, img.Root)
	}
	root, err := m.addJSON(ocispec.MediaTypeImageIndex, idx)
	if err != nil {
		return nil, err
	}
	m.Root = root
	return m, nil
}

// BuildOption configures the Build* functions.
type BuildOption func(*buildOptions)

type buildOptions struct {
	annotations map[string]string
}

// WithAnnotation sets a manifest annotation on the built image, such as
// kuasar.io/isolation=wasm.
func WithAnnotation(key, value string) BuildOption {
	return func(o *buildOptions) {
		if o.annotations == nil {
			o.annotations = map[string]string{}
		}
		o.annotations[key] = value
	}
}

func newBuildOptions(opts []BuildOption) *buildOptions {
	o := &buildOptions{}
	for _, f := range opts {
		f(o)
	}
	return o
}

func checkModule(module []byte, name string) error {
	if !isWasm(module) {
		return fmt.Errorf("%s is not a Wasm module (no \\0asm header): build it for wasm32-wasi: %w", name, errdefs.ErrInvalidArgument)
	}
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return fmt.Errorf("module name %q must be a plain file name: %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// BuildWasmImage builds a plain Wasm image: platform wasi/wasm, one tar
// layer holding the module at /NAME, and Entrypoint ["/NAME"]. name is the
// module's file name ("hello.wasm").
func BuildWasmImage(ctx context.Context, module []byte, name string, opts ...BuildOption) (*MemoryImage, error) {
	if err := checkModule(module, name); err != nil {
		return nil, err
	}
	o := newBuildOptions(opts)
	layer, err := tarLayer([]File{{Path: "/" + name, Mode: 0o755, Data: module}})
	if err != nil {
		return nil, err
	}
	return BuildImage(ImageSpec{
		Config: ocispec.Image{
			Platform: ocispec.Platform{OS: "wasi", Architecture: "wasm"},
			Config:   ocispec.ImageConfig{Entrypoint: []string{"/" + name}},
			RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(layer)}},
		},
		Layers:      []Layer{{MediaType: ocispec.MediaTypeImageLayer, Data: layer}},
		Annotations: o.annotations,
	})
}

// wasmArtifactConfig is the config of the CNCF Wasm artifact.
type wasmArtifactConfig struct {
	Architecture string          `json:"architecture"`
	OS           string          `json:"os"`
	LayerDigests []digest.Digest `json:"layerDigests"`
}

// BuildWasmArtifact builds the CNCF Wasm OCI artifact: config
// application/vnd.wasm.config.v0+json and one application/wasm layer titled
// name.
func BuildWasmArtifact(ctx context.Context, module []byte, name string, opts ...BuildOption) (*MemoryImage, error) {
	if err := checkModule(module, name); err != nil {
		return nil, err
	}
	o := newBuildOptions(opts)
	d := digest.FromBytes(module)
	return BuildImage(ImageSpec{
		ConfigMediaType: mediaTypeWasmConfigV0,
		Config:          wasmArtifactConfig{Architecture: "wasm", OS: "wasip1", LayerDigests: []digest.Digest{d}},
		ArtifactType:    mediaTypeWasmConfigV0,
		Layers:          []Layer{{MediaType: MediaTypeWasmLayer, Data: module, Annotations: map[string]string{ocispec.AnnotationTitle: name}}},
		Annotations:     o.annotations,
	})
}

// File is one entry of a layer to build.
type File struct {
	// Path is the absolute path inside the image.
	Path string
	// Mode holds the permission bits (and fs.ModeDir / fs.ModeSymlink).
	Mode fs.FileMode
	// Data is a regular file's content.
	Data []byte
	// Linkname is a symlink's target (Mode has fs.ModeSymlink), or a
	// hardlink's target path when Hardlink is set.
	Linkname string
	// Hardlink makes the entry a hardlink to Linkname.
	Hardlink bool
}

// tarLayer writes files as an uncompressed tar layer, reproducibly: entries
// are sorted, parent directories added, owners root and times zero.
func tarLayer(files []File) ([]byte, error) {
	all := map[string]File{}
	for _, f := range files {
		p := strings.TrimPrefix(path.Clean("/"+f.Path), "/")
		if p == "" || p == "." {
			continue
		}
		f.Path = p
		all[p] = f
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				all[d] = File{Path: d, Mode: fs.ModeDir | 0o755}
			}
		}
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		f := all[n]
		h := &tar.Header{Name: n, Mode: int64(f.Mode.Perm()), ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case f.Mode.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, n+"/"
		case f.Mode&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.Linkname
		case f.Hardlink:
			h.Typeflag, h.Linkname = tar.TypeLink, strings.TrimPrefix(f.Linkname, "/")
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// FilesFromDir reads a directory tree as layer files (regular files,
// directories and symlinks; other types are skipped).
func FilesFromDir(dir string) ([]File, error) {
	var files []File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		f := File{Path: "/" + filepath.ToSlash(rel), Mode: info.Mode() & (fs.ModeDir | fs.ModeSymlink | fs.ModePerm)}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			if f.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if f.Data, err = os.ReadFile(p); err != nil {
				return err
			}
		case info.IsDir():
		default:
			return nil
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read rootfs %s: %w", dir, err)
	}
	return files, nil
}

// BusyboxFiles returns a minimal root filesystem: the static busybox binary
// at /bin/busybox and symlinks /bin/APPLET for each applet (sh and sleep
// when none are given).
func BusyboxFiles(busyboxPath string, applets ...string) ([]File, error) {
	b, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, fmt.Errorf("read busybox (install busybox-static): %w", err)
	}
	if len(applets) == 0 {
		applets = []string{"sh", "sleep"}
	}
	files := []File{{Path: "/bin/busybox", Mode: 0o755, Data: b}, {Path: "/tmp", Mode: fs.ModeDir | 0o1777}, {Path: "/etc", Mode: fs.ModeDir | 0o755}}
	for _, a := range applets {
		files = append(files, File{Path: "/bin/" + a, Mode: fs.ModeSymlink | 0o777, Linkname: "busybox"})
	}
	return files, nil
}

// BuildLinuxImage builds an ordinary Linux image (platform linux/GOARCH
// unless cfg says otherwise) with one tar layer of files and the config
// cfg (Entrypoint, Cmd, Env, WorkingDir). It is how tests make the pause
// image and small VM workloads without a registry.
func BuildLinuxImage(ctx context.Context, files []File, cfg ocispec.ImageConfig, platform ocispec.Platform, opts ...BuildOption) (*MemoryImage, error) {
	o := newBuildOptions(opts)
	if platform.OS == "" {
		platform.OS = "linux"
	}
	if platform.Architecture == "" {
		platform.Architecture = goarch
	}
	if len(cfg.Env) == 0 {
		cfg.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	layer, err := tarLayer(files)
	if err != nil {
		return nil, err
	}
	return BuildImage(ImageSpec{
		Config: ocispec.Image{
			Platform: platform,
			Config:   cfg,
			RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(layer)}},
		},
		Layers:      []Layer{{MediaType: ocispec.MediaTypeImageLayer, Data: layer}},
		Annotations: o.annotations,
	})
}

// indexEntry is the root descriptor annotated with name the way containerd
// and the OCI layout spec expect.
func (m *MemoryImage) indexEntry(name string) (ocispec.Descriptor, error) {
	d := m.Root
	d.Annotations = nil
	if name == "" {
		return d, nil
	}
	named, err := reference.ParseDockerRef(name)
	if err != nil {
		return d, fmt.Errorf("image name %q: %w: %w", name, err, errdefs.ErrInvalidArgument)
	}
	d.Annotations = map[string]string{annotationContainerdImageName: named.String()}
	if t, ok := named.(reference.Tagged); ok {
		d.Annotations[ocispec.AnnotationRefName] = t.Tag()
	}
	return d, nil
}

// sortedBlobs returns the blob digests in a stable order.
func (m *MemoryImage) sortedBlobs() []digest.Digest {
	ds := make([]digest.Digest, 0, len(m.blobs))
	for d := range m.blobs {
		ds = append(ds, d)
	}
	slices.Sort(ds)
	return ds
}

// WriteLayout writes the image into the OCI layout directory dir (created if
// needed), named name in index.json; an entry with the same name is
// replaced, others are kept.
func (m *MemoryImage) WriteLayout(dir, name string) error {
	entry, err := m.indexEntry(name)
	if err != nil {
		return err
	}
	for _, d := range m.sortedBlobs() {
		bd := filepath.Join(dir, ocispec.ImageBlobsDir, d.Algorithm().String())
		if err := os.MkdirAll(bd, 0o755); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(bd, d.Encoded()), m.blobs[d], 0o644, true); err != nil {
			return err
		}
	}
	lb, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := atomicfile.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), lb, 0o644, true); err != nil {
		return err
	}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	if b, err := os.ReadFile(filepath.Join(dir, ocispec.ImageIndexFile)); err == nil {
		if err := json.Unmarshal(b, &idx); err != nil {
			return fmt.Errorf("existing %s: %w: %w", filepath.Join(dir, ocispec.ImageIndexFile), err, errdefs.ErrInvalidArgument)
		}
	}
	idx.Manifests = slices.DeleteFunc(idx.Manifests, func(d ocispec.Descriptor) bool {
		return d.Digest == entry.Digest && name == "" || name != "" && d.Annotations[annotationContainerdImageName] == entry.Annotations[annotationContainerdImageName]
	})
	idx.Manifests = append(idx.Manifests, entry)
	ib, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, ocispec.ImageIndexFile), ib, 0o644, true)
}

// WriteArchive writes the image as an OCI archive (a tar of an OCI layout)
// that ctr images import accepts, reproducibly.
func (m *MemoryImage) WriteArchive(w io.Writer, name string) error {
	entry, err := m.indexEntry(name)
	if err != nil {
		return err
	}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{entry}}
	ib, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	lb, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	tw := tar.NewWriter(w)
	dir := func(n string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: n, Mode: 0o755, ModTime: epoch})
	}
	file := func(n string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(b)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := file(ocispec.ImageLayoutFile, lb); err != nil {
		return err
	}
	if err := dir("blobs/"); err != nil {
		return err
	}
	if err := dir("blobs/sha256/"); err != nil {
		return err
	}
	for _, d := range m.sortedBlobs() {
		if err := file("blobs/"+d.Algorithm().String()+"/"+d.Encoded(), m.blobs[d]); err != nil {
			return err
		}
	}
	if err := file(ocispec.ImageIndexFile, ib); err != nil {
		return err
	}
	return tw.Close()
}

// WriteArchiveFile writes the OCI archive to path atomically.
func (m *MemoryImage) WriteArchiveFile(p, name string) error {
	var buf bytes.Buffer
	if err := m.WriteArchive(&buf, name); err != nil {
		return err
	}
	return atomicfile.WriteFile(p, buf.Bytes(), 0o644, true)
}

// Push uploads the image to the registry as ref: blobs first, then child
// manifests, then the root tagged. Blobs the registry has are skipped.
func (m *MemoryImage) Push(ctx context.Context, ref string, opts ...Option) error {
	o := newOptions(opts)
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	repo, tag, err := newRepository(named, o)
	if err != nil {
		return err
	}
	isManifest := func(mt string) bool {
		return mt == ocispec.MediaTypeImageManifest || mt == ocispec.MediaTypeImageIndex
	}
	var blobs, manifests []ocispec.Descriptor
	for _, d := range m.sortedBlobs() {
		if d == m.Root.Digest {
			continue
		}
		desc := m.descs[d]
		if isManifest(desc.MediaType) {
			manifests = append(manifests, desc)
		} else {
			blobs = append(blobs, desc)
		}
	}
	for _, d := range append(blobs, manifests...) {
		if ok, err := repo.Exists(ctx, d); err == nil && ok {
			continue
		}
		if err := repo.Push(ctx, d, bytes.NewReader(m.blobs[d.Digest])); err != nil {
			return fmt.Errorf("push %s to %s: %w", d.Digest, named, registryError(err))
		}
	}
	root := m.Root
	root.Platform = nil
	if err := repo.PushReference(ctx, root, bytes.NewReader(m.blobs[root.Digest]), tag); err != nil {
		return fmt.Errorf("push %s: %w", named, registryError(err))
	}
	return nil
}
