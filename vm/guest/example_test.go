package guest_test

import (
	"bytes"
	"fmt"

	"github.com/kuasar-go/kuasar/vm/guest"
)

// An initramfs is a newc cpio archive; the kernel unpacks it as the root.
func ExampleCPIOWriter() {
	var buf bytes.Buffer
	w := guest.NewCPIOWriter(&buf)
	w.Dir("etc", 0o755)
	w.File("init", 0o755, []byte("#!/bin/sh\necho hi\n"))
	w.Close()
	fmt.Println(buf.Len()%4 == 0, bytes.HasPrefix(buf.Bytes(), []byte("070701")))
	// Output: true true
}
