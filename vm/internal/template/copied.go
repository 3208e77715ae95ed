package template

import "context"

// GetCopied is Get for a VMM that copies a template's memory into guest
// memory of its own when it restores (Cloud Hypervisor reads its
// snapshot's memory-ranges file; it never maps it): no sealed copy is
// made, since no clone maps the template's pages, and the Template's
// Memory is nil. The caller hands MemPath to its VMM read-only.
func (s *Store) GetCopied(ctx context.Context, key Key, build BuildFunc) (*Template, error) {
	return s.get(ctx, key, build)
}

// Unusable is implemented by the errors a driver returns when restoring
// failed because of the template itself (the VMM refused its state):
// the caller removes the template (Invalidate) and boots cold.
type Unusable interface {
	error
	// TemplateUnusable marks the error; it does nothing.
	TemplateUnusable()
}
