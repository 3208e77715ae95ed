package sandboxer

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	cimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kuasar-go/kuasar/images"
)

// ContainerdImages reads image metadata from containerd's image and content
// stores over containerd's gRPC socket. It dials lazily, at first use.
type ContainerdImages struct {
	address string

	mu     sync.Mutex
	client *containerd.Client
}

// NewContainerdImages returns an ImageResolver for the containerd listening on
// address (its gRPC socket).
func NewContainerdImages(address string) *ContainerdImages {
	return &ContainerdImages{address: address}
}

// Close closes the containerd connection, if one was made.
func (c *ContainerdImages) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client != nil {
		err := c.client.Close()
		c.client = nil
		return err
	}
	return nil
}

func (c *ContainerdImages) get() (*containerd.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client == nil {
		cl, err := containerd.New(c.address)
		if err != nil {
			// Unavailable wins over the dial error's own kind (a
			// deadline, say): the sandboxer cannot reach containerd.
			return nil, fmt.Errorf("connect to containerd at %s (set sandboxer.containerd_address): %w: %w", c.address, errdefs.ErrUnavailable, err)
		}
		c.client = cl
	}
	return c.client, nil
}

// ImageMetadata implements ImageResolver.
func (c *ContainerdImages) ImageMetadata(ctx context.Context, ns, ref string) (images.Metadata, error) {
	cl, err := c.get()
	if err != nil {
		return images.Metadata{}, err
	}
	if ns == "" {
		ns = "k8s.io"
	}
	ctx = namespaces.WithNamespace(ctx, ns)
	img, err := cl.ImageService().Get(ctx, ref)
	if err != nil {
		return images.Metadata{}, fmt.Errorf("image %s in namespace %s: %w", ref, ns, err)
	}
	// The images package's detection (image shapes, compat variants) is
	// the reference; the local heuristic covers what it cannot load.
	if md, err := images.MetadataFromImage(ctx, cl.ContentStore(), img.Target); err == nil {
		return md, nil
	}
	return metadataFromStore(ctx, cl.ContentStore(), img), nil
}

// metadataFromStore applies kuasar's routing rules to what the content store
// holds for img: annotations of the image record, index and manifest, labels
// of the image config, and whether any layer or the platform is Wasm.
func metadataFromStore(ctx context.Context, cs content.Store, img cimages.Image) images.Metadata {
	md := images.Metadata{Kind: images.KindLinux, Annotations: map[string]string{}}
	for k, v := range img.Labels {
		md.Annotations[k] = v
	}
	for k, v := range img.Target.Annotations {
		md.Annotations[k] = v
	}
	wasm := false
	var cfgDesc ocispec.Descriptor
	if b, err := content.ReadBlob(ctx, cs, img.Target); err == nil && cimages.IsIndexType(img.Target.MediaType) {
		var idx ocispec.Index
		if json.Unmarshal(b, &idx) == nil {
			for k, v := range idx.Annotations {
				md.Annotations[k] = v
			}
			for _, m := range idx.Manifests {
				if m.Platform != nil && isWasmPlatform(*m.Platform) {
					wasm = true
				}
			}
		}
	}
	if mf, err := cimages.Manifest(ctx, cs, img.Target, platforms.All); err == nil {
		for k, v := range mf.Annotations {
			md.Annotations[k] = v
		}
		cfgDesc = mf.Config
		if strings.Contains(mf.Config.MediaType, "wasm") || strings.Contains(mf.ArtifactType, "wasm") {
			wasm = true
		}
		for _, l := range mf.Layers {
			if strings.Contains(l.MediaType, "wasm") {
				wasm = true
			}
		}
	}
	if cfgDesc.Digest != "" && !strings.Contains(cfgDesc.MediaType, "wasm") {
		if b, err := content.ReadBlob(ctx, cs, cfgDesc); err == nil {
			var ic ocispec.Image
			if json.Unmarshal(b, &ic) == nil {
				for k, v := range ic.Config.Labels {
					if _, ok := md.Annotations[k]; !ok {
						md.Annotations[k] = v
					}
				}
				if isWasmPlatform(ic.Platform) {
					wasm = true
				}
			}
		}
	}
	if md.Annotations[images.AnnotationWasmVariant] != "" {
		wasm = true
	}
	if wasm {
		md.Kind = images.KindWasm
	}
	md.Isolation = images.Isolation(md.Annotations[images.AnnotationIsolation])
	md.Hypervisor = md.Annotations[images.AnnotationHypervisor]
	return md
}

func isWasmPlatform(p ocispec.Platform) bool {
	return p.Architecture == "wasm" || p.Architecture == "wasm32" || strings.HasPrefix(p.OS, "wasi")
}

// SandboxExists implements SandboxStore: it asks containerd's sandbox
// store in namespace ns for id.
func (c *ContainerdImages) SandboxExists(ctx context.Context, ns, id string) (bool, error) {
	cl, err := c.get()
	if err != nil {
		return false, err
	}
	_, err = cl.SandboxStore().Get(namespaces.WithNamespace(ctx, ns), id)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sandbox %s in containerd's store (namespace %s): %w", id, ns, err)
	}
	return true, nil
}
