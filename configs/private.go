package configs

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// PrivateContainerd says where a private containerd keeps everything, for
// a stack that must not touch the system's containerd: the demo, the
// benchmark harness and the integration tests.
type PrivateContainerd struct {
	// Dir holds containerd's root ("root"), state ("state") and shim
	// sockets ("s").
	Dir string
	// GRPC and TTRPC are containerd's own sockets.
	GRPC, TTRPC string
	// Sandboxer is the kuasar-sandboxer socket the kuasar runtimes name.
	Sandboxer string
	// Runc adds containerd's runc handler (io.containerd.runc.v2) beside
	// kuasar's, for baselines and the pause image's pods.
	Runc bool
}

// Config is ContainerdSnippet, the file users install, with its sandboxer
// socket and platform set from p, plus what moves containerd off its
// system paths: with config version 4 a top-level [grpc] is ignored, so
// the sockets are set on the server plugins, and the shim socket
// directory on the shim manager. Using the shipped snippet as is keeps
// every private stack checking what users install.
func (p PrivateContainerd) Config() string {
	snippet := strings.NewReplacer(
		"version = 4\n", "",
		`"/run/kuasar/sandboxer.sock"`, strconv.Quote(p.Sandboxer),
		`"linux/amd64"`, strconv.Quote("linux/"+runtime.GOARCH),
	).Replace(string(ContainerdSnippet))
	cfg := fmt.Sprintf(`version = 4
root  = %q
state = %q
%s
[plugins.'io.containerd.server.v1.grpc']
  address = %q
[plugins.'io.containerd.server.v1.ttrpc']
  address = %q
[plugins.'io.containerd.shim.v1.manager']
  socket_dir = %q
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
`, filepath.Join(p.Dir, "root"), filepath.Join(p.Dir, "state"), snippet, p.GRPC, p.TTRPC, filepath.Join(p.Dir, "s"))
	if p.Runc {
		cfg += "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n"
	}
	return cfg
}
