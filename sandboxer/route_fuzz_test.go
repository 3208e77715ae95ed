package sandboxer

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/sandboxer/config"
)

// fuzzResolver answers every image lookup with md, or err.
type fuzzResolver struct {
	md  images.Metadata
	err error
}

func (r fuzzResolver) ImageMetadata(ctx context.Context, ns, ref string) (images.Metadata, error) {
	return r.md, r.err
}

// FuzzRoute feeds a container's hostile bundle spec (its annotations) and
// image metadata to the routing of a sandbox at its first container.
// Properties: no panic; a reason is always given; the container's
// kuasar.io/isolation annotation wins over everything else, verbatim;
// otherwise the image's asked isolation, then its kind, then the runtime
// handler's default decide; a kuasar.io/hypervisor annotation is the
// hypervisor unless the image names one further down.
func FuzzRoute(f *testing.F) {
	f.Add([]byte(`{"ociVersion":"1.2.0","annotations":{"kuasar.io/isolation":"vm","kuasar.io/hypervisor":"stratovirt"}}`), "kuasar", "", "", "", false)
	f.Add([]byte(`{"annotations":{"io.kubernetes.cri.image-name":"docker.io/library/busybox:latest"}}`), "kuasar-vm", "linux", "", "qemu", false)
	f.Add([]byte(`{"annotations":{"io.kubernetes.cri.image-name":"x"}}`), "", "wasm", "vm", "", true)
	f.Add([]byte(`not json`), "other", "", "", "", false)
	cfg, err := config.Parse([]byte("[runtime_handlers.kuasar-vm]\nisolation = \"vm\"\nhypervisor = \"qemu\"\n"))
	if err != nil {
		f.Fatal(err)
	}
	bundle := f.TempDir()
	f.Fuzz(func(t *testing.T, spec []byte, handler, imageKind, imageIso, imageHV string, resolverFails bool) {
		if err := os.WriteFile(filepath.Join(bundle, "config.json"), spec, 0o600); err != nil {
			t.Fatal(err)
		}
		r := fuzzResolver{md: images.Metadata{Kind: images.Kind(imageKind), Isolation: images.Isolation(imageIso), Hypervisor: imageHV}}
		if resolverFails {
			r.err = errors.New("no such image")
		}
		s := &Service{cfg: cfg, resolver: r}
		kind, hv, why := s.route(context.Background(), handler, "ns", bundle)
		if why == "" {
			t.Fatal("no reason given")
		}
		defKind, defHV := cfg.HandlerIsolation(handler)
		var sp specs.Spec
		if json.Unmarshal(spec, &sp) != nil {
			if kind != defKind || hv != defHV {
				t.Fatalf("unreadable spec routed to %s/%s, want the handler default %s/%s", kind, hv, defKind, defHV)
			}
			return
		}
		wantHV := defHV
		if a := sp.Annotations[annotationHypervisor]; a != "" {
			wantHV = a
		}
		if iso := sp.Annotations[AnnotationIsolation]; iso != "" {
			if kind != iso || why != "container annotation" || hv != wantHV {
				t.Fatalf("container annotation %q routed to %s/%s (%s)", iso, kind, hv, why)
			}
			return
		}
		wantKind := defKind
		if sp.Annotations[annotationImageName] != "" && !resolverFails {
			if imageHV != "" {
				wantHV = imageHV
			}
			switch {
			case imageIso != "":
				wantKind = imageIso
			case imageKind == string(images.KindLinux):
				wantKind = "vm"
			case imageKind == string(images.KindWasm):
				wantKind = "wasm"
			}
		}
		if kind != wantKind || hv != wantHV {
			t.Fatalf("routed to %s/%s (%s), want %s/%s", kind, hv, why, wantKind, wantHV)
		}
	})
}

// FuzzPodOptions feeds hostile bytes as the PodSandboxConfig containerd
// passes to Create (where pod annotations come from) and as CRI's sandbox
// metadata extension (the runtime handler). Properties: no panic; a bad
// PodSandboxConfig is an InvalidArgument error; a good one survives a
// marshal round trip; the handler is the metadata's RuntimeHandler when the
// JSON decodes, "" otherwise.
func FuzzPodOptions(f *testing.F) {
	good, err := proto.Marshal(&runtimeapi.PodSandboxConfig{
		Metadata:    &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "default", Uid: "u"},
		Hostname:    "h",
		Annotations: map[string]string{AnnotationIsolation: "wasm", annotationHypervisor: "qemu"},
		Linux:       &runtimeapi.LinuxPodSandboxConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -1}},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, []byte(`{"Metadata":{"RuntimeHandler":"kuasar-vm"}}`))
	f.Add([]byte{0x0a, 0xff}, []byte(`{"Metadata":{"RuntimeHandler":7}}`))
	f.Fuzz(func(t *testing.T, podConfig, metadata []byte) {
		cfg, err := decodePodConfig(&anypb.Any{TypeUrl: "type.googleapis.com/runtime.v1.PodSandboxConfig", Value: podConfig})
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("bad pod config: %v is not InvalidArgument", err)
			}
		} else {
			b, err := proto.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var again runtimeapi.PodSandboxConfig
			if err := proto.Unmarshal(b, &again); err != nil || !proto.Equal(cfg, &again) {
				t.Fatalf("pod config does not survive a round trip: %v", err)
			}
		}
		h := handlerFromExtensions(map[string]*anypb.Any{"metadata": {Value: metadata}})
		var md struct {
			Metadata struct{ RuntimeHandler string }
		}
		want := ""
		if json.Unmarshal(metadata, &md) == nil {
			want = md.Metadata.RuntimeHandler
		}
		if h != want {
			t.Fatalf("handler %q, want %q", h, want)
		}
	})
}
