package quark_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/quark"
)

// Command is the command line Start runs, the way Kuasar drives Quark's
// sandbox mode; it runs in the bundle directory.
func ExampleCommand() {
	fmt.Println(strings.Join(quark.Command("quark", "/run/kuasar/b/1f/sandbox", "/run/kuasar/b/1f/quark-task.sock", "pod1", "/run/kuasar/b/1f/pid"), " "))
	// Output:
	// quark -r /run/kuasar/b/1f/sandbox sandbox --task-socket /run/kuasar/b/1f/quark-task.sock --id pod1 --pid-file /run/kuasar/b/1f/pid
}

// The sandboxer builds the backend whatever the host and logs what Check
// finds missing; each Quark pod then fails with the same error and fix.
func ExampleBackend_Check() {
	dir, _ := os.MkdirTemp("", "quark-example")
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "config.json")
	os.WriteFile(cfg, []byte(`{"Sandboxed": true, "ShimMode": true}`), 0o600)
	b := quark.New(quark.Config{Binary: "/bin/sh", ConfigFile: cfg}) // any executable, for the example
	err := b.Check()
	fmt.Println(errors.Is(err, errdefs.ErrFailedPrecondition), strings.Contains(err.Error(), `set "ShimMode": false`))
	// Output:
	// true true
}
