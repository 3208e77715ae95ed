// Command kuasar-task is the kuasar guest agent: the static binary that is
// /init in a micro-VM's initramfs. As PID 1 it mounts the base file systems,
// loads the kernel modules listed in /etc/kuasar/modules.load, opens the
// host channel (virtio-serial port kuasar.agent or vsock port 1024) and
// serves containerd's Task API v3 and kuasar.agent.v1.Agent over ttrpc on it.
// The code is package task/agent; this file only parses flags.
//
// Outside a VM it can serve on a unix socket for development:
//
//	kuasar-task --listen /run/kuasar-task.sock
package main

import (
	"flag"
	"fmt"

	"github.com/kuasar-go/kuasar/task/agent"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if agent.IsHelper() {
		agent.RunHelper()
	}
	listen := flag.String("listen", "", "serve on this unix socket instead of the VM channel (development)")
	debug := flag.Bool("debug", false, "log at debug level")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return
	}
	agent.Main(agent.Options{Listen: *listen, Debug: *debug, Version: version})
}
