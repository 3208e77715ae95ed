// Command containerd-shim-kuasar-v1 is the runtime binary containerd needs on
// disk for runtime type io.containerd.kuasar.v1. Tasks of kuasar sandboxes are
// served by kuasar-sandboxer at the address its Sandbox API returns, so this
// binary never starts a shim: it answers the two things containerd still asks
// of the binary itself.
//
//	containerd-shim-kuasar-v1 -info     protobuf types.RuntimeInfo on stdout (CRI)
//	containerd-shim-kuasar-v1 ... delete protobuf task.DeleteResponse on stdout,
//	                                     run after every task delete; the task is
//	                                     already gone, so it reports exit 137 now
//	containerd-shim-kuasar-v1 -v         the version
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kuasar-go/kuasar/internal/version"
)

// featuresTypeURL is the type URL containerd registers for runtime-spec
// features.Features (JSON-encoded).
const featuresTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"

// runtimeName is the runtime type this binary stands for.
const runtimeName = "io.containerd.kuasar.v1"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	action := ""
	for _, a := range args {
		switch strings.TrimLeft(a, "-") {
		case "v", "version":
			fmt.Fprintln(stdout, "containerd-shim-kuasar-v1", version.Version, version.Revision)
			return 0
		case "info":
			action = "info"
		case "delete":
			action = "delete"
		case "start":
			action = "start"
		}
	}
	var msg proto.Message
	switch action {
	case "info":
		m, err := info()
		if err != nil {
			fmt.Fprintln(stderr, "containerd-shim-kuasar-v1:", err)
			return 1
		}
		msg = m
	case "delete":
		msg = &taskv2.DeleteResponse{ExitStatus: 137, ExitedAt: timestamppb.New(time.Now())}
	case "start":
		fmt.Fprintln(stderr, "containerd-shim-kuasar-v1: kuasar tasks are served by kuasar-sandboxer; "+
			"this runtime works only in a sandbox whose sandboxer is \"kuasar\" (CRI runtime handler with sandboxer = \"kuasar\", see docs/sandboxer.md)")
		return 1
	default:
		fmt.Fprintln(stderr, "usage: containerd-shim-kuasar-v1 -info | -v | [containerd shim flags] delete")
		return 2
	}
	b, err := proto.Marshal(msg)
	if err != nil {
		fmt.Fprintln(stderr, "containerd-shim-kuasar-v1:", err)
		return 1
	}
	if _, err := stdout.Write(b); err != nil {
		return 1
	}
	return 0
}

// info describes the runtime to CRI: name, version and the OCI features it
// honours (no user namespaces, no mount extensions).
func info() (*types.RuntimeInfo, error) {
	f := features.Features{
		OCIVersionMin: "1.0.0",
		OCIVersionMax: specs.Version,
		Annotations:   map[string]string{"io.kuasar.runtime": "kuasar-go"},
	}
	b, err := json.Marshal(&f)
	if err != nil {
		return nil, err
	}
	return &types.RuntimeInfo{
		Name:     runtimeName,
		Version:  &types.RuntimeVersion{Version: version.Version, Revision: version.Revision},
		Features: &anypb.Any{TypeUrl: featuresTypeURL, Value: b},
	}, nil
}
