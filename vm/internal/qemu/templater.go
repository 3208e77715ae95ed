package qemu

// TemplateUnusable marks a TemplateError as a template.Unusable: the
// VM backend removes the template and boots cold.
func (e *TemplateError) TemplateUnusable() {}

// TemplateMemoryMapped reports that a clone maps its template's memory
// (privately, from a sealed memfd; see template.go): it needs
// template.Store.Get, which hands out that sealed copy.
func (v *VM) TemplateMemoryMapped() bool { return true }

// TemplateSocketRoom is how long the paths of the unix sockets a
// template build's QEMU makes below its work directory get: the
// migration socket in vm/.
func (v *VM) TemplateSocketRoom() int { return len("/vm/" + MigrateSocketName) }
