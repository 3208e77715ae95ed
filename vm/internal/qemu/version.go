package qemu

import "github.com/kuasar-go/kuasar/vm/internal/template"

// KnowVersion tells the driver the version the QEMU binary identified by
// id reports, as a template's key recorded it, so that TemplateKey need
// not run `qemu -version` again: a fresh `kuasar run` process would
// otherwise start QEMU twice, and under load the first start alone takes
// up to a second (page-ins and scheduling; 0.07 s of CPU). The identity
// (path, size, mtime, inode, device) is what the key relies on for the
// binary itself.
func KnowVersion(id template.FileID, version string) {
	if version != "" {
		versions.LoadOrStore(id, version)
	}
}
