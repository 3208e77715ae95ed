// Command kuasar-vmm-jail is the VMM jail helper: the sandboxer and the
// kuasar CLI start it (when it is installed next to them, root-owned and
// not group/world-writable) to build each VMM's jail or mount namespace
// and exec the VMM, instead of re-executing their own much bigger
// binary. It is not meant to be run by hand.
package main

import (
	"fmt"
	"os"

	"github.com/kuasar-go/kuasar/vm/jailhelper"
)

func main() {
	jailhelper.Main() // returns only when argv[0] names no helper
	fmt.Fprintf(os.Stderr, "%s: the VMM jail helper, started by kuasar-sandboxer and kuasar; not meant to be run by hand\n", jailhelper.Name)
	os.Exit(2)
}
