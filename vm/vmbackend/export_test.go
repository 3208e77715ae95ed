package vmbackend

import "github.com/kuasar-go/kuasar/vm/internal/template"

// TemplateStore is b's template store, for tests that restore from a
// template by hand.
func TemplateStore(b *Backend) *template.Store { return b.templates }

// TemplateMemDir is where b keeps its templates' memory files.
func TemplateMemDir(b *Backend) string { return b.templateMemDir }

// PoolClones lists the pids and directories of b's idle pool clones.
func PoolClones(b *Backend) (pids []int, dirs []string) {
	if b.pool == nil {
		return nil, nil
	}
	b.pool.mu.Lock()
	defer b.pool.mu.Unlock()
	for _, s := range b.pool.sets {
		for _, c := range s.idle {
			pids = append(pids, c.hv.Pid())
			dirs = append(dirs, c.sb.StateDir)
		}
	}
	return pids, dirs
}
