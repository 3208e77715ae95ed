package guest

import (
	"fmt"
	"io"
	"strings"
)

// CPIOWriter writes a "newc" (SVR4 without CRC) cpio archive, the format
// the Linux kernel unpacks as an initramfs. It needs no privileges: owners
// and modes are whatever the caller says.
type CPIOWriter struct {
	w     io.Writer
	ino   uint32
	count int64
	err   error
}

// NewCPIOWriter returns a writer that appends entries to w.
func NewCPIOWriter(w io.Writer) *CPIOWriter { return &CPIOWriter{w: w, ino: 1} }

// Mode bits for CPIO entries.
const (
	cpioDir  = 0o040000
	cpioReg  = 0o100000
	cpioLink = 0o120000
)

func (c *CPIOWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.count += int64(n)
	c.err = err
}

func (c *CPIOWriter) pad() {
	if r := c.count % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *CPIOWriter) header(name string, mode uint32, size int) {
	name = strings.TrimPrefix(name, "/")
	if name == "" {
		name = "."
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == cpioDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
}

// Dir adds a directory with permissions perm.
func (c *CPIOWriter) Dir(name string, perm uint32) error {
	c.header(name, cpioDir|perm&0o7777, 0)
	return c.err
}

// File adds a regular file with permissions perm and contents data.
func (c *CPIOWriter) File(name string, perm uint32, data []byte) error {
	c.header(name, cpioReg|perm&0o7777, len(data))
	c.write(data)
	c.pad()
	return c.err
}

// Symlink adds a symbolic link name pointing at target.
func (c *CPIOWriter) Symlink(name, target string) error {
	c.header(name, cpioLink|0o777, len(target))
	c.write([]byte(target))
	c.pad()
	return c.err
}

// Close writes the trailer. It does not close the underlying writer.
func (c *CPIOWriter) Close() error {
	c.header("TRAILER!!!", 0, 0)
	return c.err
}
