// Command containerd-shim-kuasar-v1 is the runtime binary containerd needs on
// disk for runtime type io.containerd.kuasar.v1. Tasks of kuasar sandboxes are
// served by kuasar-sandboxer at the address its Sandbox API returns, so this
// binary never starts a shim: it answers the two things containerd still asks
// of the binary itself.
//
//	containerd-shim-kuasar-v1 -info     protobuf types.RuntimeInfo on stdout (CRI)
//	containerd-shim-kuasar-v1 ... delete protobuf task.DeleteResponse on stdout:
//	                                     the exit kuasar-sandboxer recorded in the
//	                                     bundle (internal/exitrecord), else 137
//	containerd-shim-kuasar-v1 -v         the version
//
// containerd runs delete after every task delete and, more importantly, when
// it loses the connection to a task's server (the sandboxer died): it then
// publishes the status delete prints as the task's exit. The sandboxer
// records each task's exit in its bundle as it happens, so a task that had
// already ended keeps its real status; a task with no record was still
// running when its host went away and is reported killed (137), which is
// what happened to it (in-process Wasm dies with the sandboxer).
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
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kuasar-go/kuasar/internal/exitrecord"
	"github.com/kuasar-go/kuasar/internal/version"
)

// featuresTypeURL is the type URL containerd registers for runtime-spec
// features.Features (JSON-encoded).
const featuresTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"

// runtimeName is the runtime type this binary stands for.
const runtimeName = "io.containerd.kuasar.v1"

// killedStatus is reported for a task without an exit record: it was
// running when the sandboxer that hosted it went away (128+SIGKILL).
const killedStatus = 128 + 9

// valueFlags are containerd's shim flags that take a value (see
// core/runtime/v2/command.go); the value is never taken for an action.
var valueFlags = map[string]bool{"namespace": true, "address": true, "publish-binary": true, "id": true, "bundle": true, "socket": true}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	action, bundle := "", ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		name := strings.TrimLeft(a, "-")
		if strings.HasPrefix(a, "-") {
			if k, v, ok := strings.Cut(name, "="); ok {
				if k == "bundle" {
					bundle = v
				}
				continue
			}
			if valueFlags[name] && i+1 < len(args) {
				if name == "bundle" {
					bundle = args[i+1]
				}
				i++
				continue
			}
		}
		switch name {
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
		msg = deleteResponse(bundle, stderr)
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

// deleteResponse reports the exit recorded in bundle ("" means the working
// directory, where containerd runs delete). Without a record, or with one
// that cannot be read, it reports the task killed and says why on stderr,
// which containerd logs.
func deleteResponse(bundle string, stderr io.Writer) *taskv2.DeleteResponse {
	if bundle == "" {
		bundle = "."
	}
	r, err := exitrecord.Read(bundle)
	if err != nil {
		if errdefs.IsNotFound(err) {
			fmt.Fprintf(stderr, "containerd-shim-kuasar-v1: no exit recorded in bundle %s: the task was still running when kuasar-sandboxer lost it; reporting it killed (%d)\n", bundle, killedStatus)
		} else {
			fmt.Fprintf(stderr, "containerd-shim-kuasar-v1: %v; reporting the task killed (%d)\n", err, killedStatus)
		}
		return &taskv2.DeleteResponse{ExitStatus: killedStatus, ExitedAt: timestamppb.New(time.Now())}
	}
	return &taskv2.DeleteResponse{Pid: r.Pid, ExitStatus: r.Status, ExitedAt: timestamppb.New(r.ExitedAt)}
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
