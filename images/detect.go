package images

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"runtime"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker media types that registries still serve for ordinary images.
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// Shape says which of the known image layouts an image uses.
type Shape string

// The image shapes ModuleFromImage understands (docs/images.md describes them).
const (
	// ShapeWasmEntrypoint is a plain image (platform wasi/wasm) whose
	// entrypoint names a .wasm file in its tar layers.
	ShapeWasmEntrypoint Shape = "wasm-entrypoint"
	// ShapeWasmLayers is an image with config architecture wasm and layers of
	// a Wasm media type.
	ShapeWasmLayers Shape = "wasm-layers"
	// ShapeWasmArtifact is the CNCF Wasm artifact (config
	// application/vnd.wasm.config.v0+json, layer application/wasm).
	ShapeWasmArtifact Shape = "wasm-artifact"
	// ShapeWasmToOCI is the older wasm-to-oci form (config
	// application/vnd.wasm.config.v1+json).
	ShapeWasmToOCI Shape = "wasm-to-oci"
	// ShapeCompat is a crun/WasmEdge compat image
	// (module.wasm.image/variant=compat or compat-smart).
	ShapeCompat Shape = "compat"
	// ShapeLinux is an ordinary Linux container image.
	ShapeLinux Shape = "linux"
)

// Image is an image manifest together with its config, read (and verified)
// from a Provider.
type Image struct {
	// Descriptor is the manifest's descriptor (after platform selection when
	// the reference named an index).
	Descriptor ocispec.Descriptor
	// Manifest is the decoded image manifest.
	Manifest ocispec.Manifest
	// Config is the decoded image config; for Wasm artifacts only the fields
	// they share with an image config (architecture, os) are set.
	Config ocispec.Image
	// Shape says which image layout this is.
	Shape Shape
}

// args returns the image's default argv: Entrypoint followed by Cmd.
func (img *Image) args() []string {
	return append(slices.Clone(img.Config.Config.Entrypoint), img.Config.Config.Cmd...)
}

// loadImage reads the manifest (or index) desc names from p, picks the
// platform kuasar runs when desc is an index (wasi/wasm, then wasip1/wasm,
// then any wasm, then linux/GOARCH), and reads the config. Every blob is
// verified against its digest.
func loadImage(ctx context.Context, p Provider, desc ocispec.Descriptor) (*Image, error) {
	parentAnnotations := map[string]string{}
	for depth := 0; ; depth++ {
		if depth > 4 {
			return nil, fmt.Errorf("image %s: indexes nested more than 4 deep: %w", desc.Digest, errdefs.ErrInvalidArgument)
		}
		switch desc.MediaType {
		case ocispec.MediaTypeImageIndex, mediaTypeDockerManifestList:
			var idx ocispec.Index
			if err := readJSON(ctx, p, desc, &idx); err != nil {
				return nil, err
			}
			maps.Copy(parentAnnotations, idx.Annotations)
			next, err := selectPlatform(idx.Manifests)
			if err != nil {
				return nil, fmt.Errorf("image index %s: %w", desc.Digest, err)
			}
			maps.Copy(parentAnnotations, next.Annotations)
			desc = next
			continue
		case ocispec.MediaTypeImageManifest, mediaTypeDockerManifest, "":
		default:
			return nil, fmt.Errorf("%s has media type %q, which is not an image manifest or index: %w", desc.Digest, desc.MediaType, errdefs.ErrInvalidArgument)
		}
		img := &Image{Descriptor: desc}
		if err := readJSON(ctx, p, desc, &img.Manifest); err != nil {
			return nil, err
		}
		if desc.MediaType == "" {
			img.Descriptor.MediaType = img.Manifest.MediaType
			if img.Descriptor.MediaType == "" {
				img.Descriptor.MediaType = ocispec.MediaTypeImageManifest
			}
		}
		if img.Manifest.Config.Digest == "" {
			return nil, fmt.Errorf("manifest %s has no config descriptor: %w", desc.Digest, errdefs.ErrInvalidArgument)
		}
		raw, err := readVerified(ctx, p, img.Manifest.Config, maxJSONBlob)
		if err != nil {
			return nil, fmt.Errorf("config of manifest %s: %w", desc.Digest, err)
		}
		// Wasm artifact configs may be "{}" or carry only some fields; decode
		// leniently into the image config shape.
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &img.Config); err != nil && !isWasmConfig(img.Manifest.Config.MediaType) {
				return nil, fmt.Errorf("decode config %s of manifest %s: %w: %w", img.Manifest.Config.Digest, desc.Digest, err, errdefs.ErrInvalidArgument)
			}
		}
		// Annotations from the index entry that led here count as manifest
		// annotations (the manifest's own win).
		if len(parentAnnotations) > 0 {
			merged := maps.Clone(parentAnnotations)
			maps.Copy(merged, img.Manifest.Annotations)
			img.Manifest.Annotations = merged
		}
		img.Shape = classify(img)
		return img, nil
	}
}

// selectPlatform picks the manifest kuasar runs from an index's entries:
// wasi/wasm first, then wasip1/wasm, then any wasm architecture, then
// linux/GOARCH; an index with a single entry gives that entry.
func selectPlatform(manifests []ocispec.Descriptor) (ocispec.Descriptor, error) {
	prefs := []func(p *ocispec.Platform) bool{
		func(p *ocispec.Platform) bool { return p.OS == "wasi" && p.Architecture == "wasm" },
		func(p *ocispec.Platform) bool { return p.OS == "wasip1" && p.Architecture == "wasm" },
		func(p *ocispec.Platform) bool { return p.Architecture == "wasm" },
		func(p *ocispec.Platform) bool { return p.OS == "linux" && p.Architecture == runtime.GOARCH },
	}
	for _, pref := range prefs {
		for _, m := range manifests {
			if m.Platform != nil && pref(m.Platform) {
				return m, nil
			}
		}
	}
	if len(manifests) == 1 {
		return manifests[0], nil
	}
	var have []string
	for _, m := range manifests {
		if m.Platform != nil {
			have = append(have, m.Platform.OS+"/"+m.Platform.Architecture)
		} else {
			have = append(have, "(no platform)")
		}
	}
	return ocispec.Descriptor{}, fmt.Errorf("no manifest for wasi/wasm, wasip1/wasm or linux/%s among %d (has %s); build one for wasi/wasm: %w",
		runtime.GOARCH, len(manifests), strings.Join(have, ", "), errdefs.ErrNotFound)
}

// classify says which shape an image has from its media types, platform and
// annotations (compat-smart images are refined by reading the entrypoint).
func classify(img *Image) Shape {
	for _, l := range img.Manifest.Layers {
		if isWasmLayer(l.MediaType) {
			switch img.Manifest.Config.MediaType {
			case mediaTypeWasmConfigV0:
				return ShapeWasmArtifact
			case mediaTypeWasmConfigV1:
				return ShapeWasmToOCI
			}
			return ShapeWasmLayers
		}
	}
	switch img.Manifest.Config.MediaType {
	case mediaTypeWasmConfigV0:
		return ShapeWasmArtifact
	case mediaTypeWasmConfigV1:
		return ShapeWasmToOCI
	}
	switch img.Manifest.Annotations[AnnotationWasmVariant] {
	case "compat", "compat-smart":
		return ShapeCompat
	}
	if img.Config.Architecture == "wasm" || img.Config.OS == "wasi" || img.Config.OS == "wasip1" {
		return ShapeWasmEntrypoint
	}
	return ShapeLinux
}

// imageMetadata builds the routing metadata of img; kind is decided by the
// caller (compat-smart needs the module file).
func imageMetadata(img *Image, kind Kind) (Metadata, error) {
	md := Metadata{Kind: kind, Annotations: map[string]string{}}
	maps.Copy(md.Annotations, img.Config.Config.Labels)
	maps.Copy(md.Annotations, img.Manifest.Annotations)
	iso, err := ParseIsolation(md.Annotations[AnnotationIsolation])
	if err != nil {
		return Metadata{}, fmt.Errorf("image %s: annotation %s: %w", img.Descriptor.Digest, AnnotationIsolation, err)
	}
	md.Isolation = iso
	md.Hypervisor = md.Annotations[AnnotationHypervisor]
	return md, nil
}

// ParseIsolation turns an annotation or flag value into an Isolation; "" and
// "auto" mean IsolationAuto.
func ParseIsolation(s string) (Isolation, error) {
	switch Isolation(s) {
	case IsolationAuto, "auto":
		return IsolationAuto, nil
	case IsolationWasm, IsolationVM, IsolationQuark:
		return Isolation(s), nil
	}
	return "", fmt.Errorf("unknown isolation %q: use wasm, vm or quark: %w", s, errdefs.ErrInvalidArgument)
}

// MetadataFromImage reads the routing metadata of the image desc names (a
// manifest or an index) from p: whether it is Wasm, and the isolation and
// hypervisor it asks for. It reads the image's layers only for compat-smart
// images, whose kind depends on the entrypoint file.
func MetadataFromImage(ctx context.Context, p Provider, desc ocispec.Descriptor) (Metadata, error) {
	img, err := loadImage(ctx, p, desc)
	if err != nil {
		return Metadata{}, err
	}
	return detect(ctx, p, img)
}

// detect gives the routing metadata of an already loaded image.
func detect(ctx context.Context, p Provider, img *Image) (Metadata, error) {
	kind := KindWasm
	switch img.Shape {
	case ShapeLinux:
		kind = KindLinux
	case ShapeCompat:
		if img.Manifest.Annotations[AnnotationWasmVariant] == "compat-smart" {
			// Wasm when the entrypoint file is a module; a missing or
			// non-Wasm entrypoint makes it Linux, other errors (unreadable
			// or corrupt layers) are reported.
			mod, _, err := moduleFromImage(ctx, p, img, "")
			switch {
			case err == nil && isWasm(mod):
			case err == nil || errdefs.IsNotFound(err) || errdefs.IsInvalidArgument(err):
				kind = KindLinux
			default:
				return Metadata{}, err
			}
		}
	}
	return imageMetadata(img, kind)
}

// Module is the Wasm module an image runs.
type Module struct {
	// Bytes is the module (or component) binary, digest-verified when it
	// came from a layer.
	Bytes []byte
	// Function is the export to start, from an entrypoint written
	// path#function ("" means _start).
	Function string
	// Metadata is the image's routing metadata.
	Metadata Metadata
	// Image is the loaded manifest and config.
	Image *Image
}

// ModuleFromImage finds the Wasm module of the image desc names in p,
// whatever its shape: a layer of a Wasm media type (artifact, wasm-to-oci,
// wasm layers) or the file named by the entrypoint inside the tar layers
// (plain wasi/wasm and compat images), whiteouts honoured. It returns an
// errdefs.ErrFailedPrecondition error for Linux images.
//
// The sandboxer calls it with containerd's content store, because containerd
// does not unpack non-tar layers into a snapshot.
func ModuleFromImage(ctx context.Context, p Provider, desc ocispec.Descriptor) (*Module, error) {
	img, err := loadImage(ctx, p, desc)
	if err != nil {
		return nil, err
	}
	return moduleFromLoaded(ctx, p, img, "")
}

// moduleFromLoaded is ModuleFromImage for an image already loaded; when
// rootfs is not "" the entrypoint file is read from that unpacked root
// (inside it, symlinks resolved within it) instead of from the layers.
func moduleFromLoaded(ctx context.Context, p Provider, img *Image, rootfs string) (*Module, error) {
	md, err := detect(ctx, p, img)
	if err != nil {
		return nil, err
	}
	if md.Kind != KindWasm {
		return nil, fmt.Errorf("image %s is a Linux image, not Wasm: run it with VM isolation (--isolation vm): %w", img.Descriptor.Digest, errdefs.ErrFailedPrecondition)
	}
	mod, fn, err := moduleFromImage(ctx, p, img, rootfs)
	if err != nil {
		return nil, err
	}
	return &Module{Bytes: mod, Function: fn, Metadata: md, Image: img}, nil
}

// splitFunction splits "path#function".
func splitFunction(arg0 string) (string, string) {
	if i := strings.LastIndexByte(arg0, '#'); i >= 0 {
		return arg0[:i], arg0[i+1:]
	}
	return arg0, ""
}

func moduleFromImage(ctx context.Context, p Provider, img *Image, rootfs string) ([]byte, string, error) {
	args := img.args()
	var modPath, fn string
	if len(args) > 0 {
		modPath, fn = splitFunction(args[0])
	}
	var wasmLayers []ocispec.Descriptor
	for _, l := range img.Manifest.Layers {
		if isWasmLayer(l.MediaType) {
			wasmLayers = append(wasmLayers, l)
		}
	}
	if len(wasmLayers) > 0 {
		layer := wasmLayers[0]
		// Several Wasm layers: the one titled like the entrypoint wins.
		if base := path.Base(modPath); len(wasmLayers) > 1 && modPath != "" {
			for _, l := range wasmLayers {
				if l.Annotations[ocispec.AnnotationTitle] == base {
					layer = l
					break
				}
			}
		}
		b, err := readVerified(ctx, p, layer, maxModuleSize)
		if err != nil {
			return nil, "", fmt.Errorf("wasm layer of image %s: %w", img.Descriptor.Digest, err)
		}
		if !isWasm(b) {
			return nil, "", fmt.Errorf("layer %s of image %s has media type %s but does not start with the Wasm magic \\0asm: %w", layer.Digest, img.Descriptor.Digest, layer.MediaType, errdefs.ErrInvalidArgument)
		}
		return b, fn, nil
	}
	if img.Shape == ShapeWasmArtifact || img.Shape == ShapeWasmToOCI {
		return nil, "", fmt.Errorf("wasm artifact %s has no layer of media type %s: %w", img.Descriptor.Digest, MediaTypeWasmLayer, errdefs.ErrInvalidArgument)
	}
	if modPath == "" {
		return nil, "", fmt.Errorf("image %s has no entrypoint naming its module: set the image config's Entrypoint to the .wasm path: %w", img.Descriptor.Digest, errdefs.ErrInvalidArgument)
	}
	if !path.IsAbs(modPath) {
		wd := img.Config.Config.WorkingDir
		if wd == "" {
			wd = "/"
		}
		modPath = path.Join(wd, modPath)
	}
	var b []byte
	var err error
	if rootfs != "" {
		b, err = readFileInRoot(rootfs, modPath, maxModuleSize)
	} else {
		b, err = findInLayers(ctx, p, img.Manifest.Layers, modPath, maxModuleSize)
	}
	if err != nil {
		return nil, "", fmt.Errorf("entrypoint %s of image %s: %w", modPath, img.Descriptor.Digest, err)
	}
	if !isWasm(b) {
		return nil, "", fmt.Errorf("entrypoint %s of image %s is not a Wasm module (no \\0asm header): point Entrypoint at the .wasm file: %w", modPath, img.Descriptor.Digest, errdefs.ErrInvalidArgument)
	}
	return b, fn, nil
}
