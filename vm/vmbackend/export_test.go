package vmbackend

import "github.com/kuasar-go/kuasar/vm/internal/template"

// TemplateStore is b's template store, for tests that restore from a
// template by hand.
func TemplateStore(b *Backend) *template.Store { return b.templates }

// TemplateMemDir is where b keeps its templates' memory files.
func TemplateMemDir(b *Backend) string { return b.templateMemDir }
