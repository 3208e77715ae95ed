// Package contentstore finds a Wasm container's module in the wasm layers
// of its image in containerd's content store: the ModuleResolver of
// task/wasmtask that kuasar-sandboxer uses. It is a package of its own so
// that only the daemon links containerd's client (and its gRPC, OpenTelemetry
// and remotes code): `kuasar run` hands the backend the module it read
// itself.
package contentstore

import (
	"context"
	"fmt"
	"sync"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/kuasar-go/kuasar/images"
)

// maxCachedImages bounds how many images' module bytes ContainerdResolver
// keeps, so that a node cycling through many images does not grow without
// bound (compiled code is cached by the engine anyway).
const maxCachedImages = 16

// Resolver is a wasmtask.ModuleResolver reading the image of a container
// from containerd: the container record gives the image name, the image
// record its manifest, and images.ModuleFromImage picks the module from the
// manifest's wasm layers in containerd's content store (containerd never
// unpacks non-tar layers into a snapshot). It dials containerd lazily.
type Resolver struct {
	address string

	mu     sync.Mutex
	client *containerd.Client
	cache  map[digest.Digest]*images.Module
}

// New returns a resolver for the containerd whose gRPC socket is address.
func New(address string) *Resolver {
	return &Resolver{address: address, cache: map[digest.Digest]*images.Module{}}
}

func (r *Resolver) get() (*containerd.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client == nil {
		cl, err := containerd.New(r.address)
		if err != nil {
			return nil, fmt.Errorf("connect to containerd at %s (set sandboxer.containerd_address): %w: %w", r.address, errdefs.ErrUnavailable, err)
		}
		r.client = cl
	}
	return r.client, nil
}

// ResolveModule implements wasmtask.ModuleResolver.
func (r *Resolver) ResolveModule(ctx context.Context, ns, containerID string) ([]byte, string, error) {
	cl, err := r.get()
	if err != nil {
		return nil, "", err
	}
	ctx = namespaces.WithNamespace(ctx, ns)
	c, err := cl.ContainerService().Get(ctx, containerID)
	if err != nil {
		return nil, "", fmt.Errorf("container %s in namespace %s: %w", containerID, ns, err)
	}
	if c.Image == "" {
		return nil, "", fmt.Errorf("container %s has no image: %w", containerID, errdefs.ErrNotFound)
	}
	img, err := cl.ImageService().Get(ctx, c.Image)
	if err != nil {
		return nil, "", fmt.Errorf("image %s of container %s: %w", c.Image, containerID, err)
	}
	r.mu.Lock()
	m, ok := r.cache[img.Target.Digest]
	r.mu.Unlock()
	if !ok {
		m, err = images.ModuleFromImage(ctx, cl.ContentStore(), img.Target)
		if err != nil {
			return nil, "", fmt.Errorf("image %s: %w", c.Image, err)
		}
		r.mu.Lock()
		if len(r.cache) >= maxCachedImages {
			for k := range r.cache {
				delete(r.cache, k)
				break
			}
		}
		r.cache[img.Target.Digest] = m
		r.mu.Unlock()
	}
	return m.Bytes, m.Function, nil
}

// Close closes the containerd connection, if one was made.
func (r *Resolver) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client == nil {
		return nil
	}
	err := r.client.Close()
	r.client = nil
	return err
}
