package sandboxer

import (
	"context"
	"github.com/containerd/log"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/bundle"
)

// ImageResolver reads the routing metadata of an image that containerd holds.
type ImageResolver interface {
	// ImageMetadata returns the metadata of the image called ref in the
	// containerd namespace ns.
	ImageMetadata(ctx context.Context, ns, ref string) (images.Metadata, error)
}

// route decides the kind of a sandbox whose pod did not name one, from its
// first container's bundle: the container's own kuasar.io/isolation
// annotation, then the image's metadata, then the runtime handler's default.
// why says which of them decided, for the log.
func (s *Service) route(ctx context.Context, handler, namespace, bundleDir string) (kind, hypervisor, why string) {
	kind, hypervisor = s.cfg.HandlerIsolation(handler)
	why = "runtime handler " + handler + " default"
	if handler == "" {
		why = "sandboxer default_isolation"
	}
	if bundleDir == "" {
		return kind, hypervisor, why
	}
	sp, err := bundle.ReadSpec(bundleDir)
	if err != nil {
		log.G(ctx).WithError(err).Debug("no bundle spec to route on")
		return kind, hypervisor, why
	}
	if hv := sp.Annotations[annotationHypervisor]; hv != "" {
		hypervisor = hv
	}
	if iso := sp.Annotations[AnnotationIsolation]; iso != "" {
		return iso, hypervisor, "container annotation"
	}
	ref := sp.Annotations[annotationImageName]
	if ref == "" || s.resolver == nil {
		return kind, hypervisor, why
	}
	md, err := s.resolver.ImageMetadata(ctx, namespace, ref)
	if err != nil {
		log.G(ctx).WithError(err).WithField("image", ref).Warn("cannot read image metadata; using the handler default")
		return kind, hypervisor, why
	}
	if md.Hypervisor != "" {
		hypervisor = md.Hypervisor
	}
	switch {
	case md.Isolation != images.IsolationAuto:
		return string(md.Isolation), hypervisor, "image annotation of " + ref
	case md.Kind == images.KindLinux:
		return string(images.IsolationVM), hypervisor, "image " + ref + " is a Linux image"
	case md.Kind == images.KindWasm:
		return string(images.IsolationWasm), hypervisor, "image " + ref + " is a Wasm image"
	}
	return kind, hypervisor, why
}
