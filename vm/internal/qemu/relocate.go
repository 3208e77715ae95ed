package qemu

// Relocate tells the VM that its state and shared directories were
// renamed (with their parent, in one rename) to stateDir and sharedDir
// while QEMU runs, as when a sandbox adopts a clone from the VM backend's
// warm pool. QEMU keeps working: its sockets, console log and 9p export
// are open files or bound inodes, not paths, and a confined QEMU sees the
// directories through binds made at its start. From here on the host side
// (sockets to remove, the console log to name, a re-listened agent socket
// on Attach) uses the new paths. The VM keeps its ID, so its -name, which
// Attach matches, is unchanged.
func (v *VM) Relocate(stateDir, sharedDir string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.spec.StateDir = stateDir
	if v.spec.SharedDir != "" {
		v.spec.SharedDir = sharedDir
	}
}

// ID is the VM's ID (its QEMU runs with -name kuasar-<ID>).
func (v *VM) ID() string { return v.spec.ID }
