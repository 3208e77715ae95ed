package vmm

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/procmark"
)

// Owner is the mark of the processes whose log is logPath: the directory
// holding the log (a VM's state directory).
func Owner(logPath string) string { return filepath.Dir(logPath) }

// RecordPath is where the process logging to logPath is recorded: the log's
// name with ".proc" for ".log" (vmm.log → vmm.proc, virtiofsd.log →
// virtiofsd.proc).
func RecordPath(logPath string) string {
	return strings.TrimSuffix(logPath, filepath.Ext(logPath)) + procmark.RecordExt
}

// recordIntent records, before the process exists, that path is about to
// be started for the owner of logPath.
func recordIntent(path, logPath string) error {
	if err := procmark.Write(RecordPath(logPath), procmark.Record{Owner: Owner(logPath), Path: path}); err != nil {
		return fmt.Errorf("record %s before starting it: %w", path, err)
	}
	return nil
}

// recordStarted records the started child's pid and start time (read by
// child before it could be reaped).
func (p *Process) recordStarted(path string) error {
	if p.idErr != nil {
		return fmt.Errorf("read the start time of %s (pid %d): %w: %s", path, p.pid, p.idErr, p.Tail(2000))
	}
	r := procmark.Record{Owner: p.id.Owner, Path: path, Pid: p.pid, StartTime: p.id.StartTime}
	if err := procmark.Write(RecordPath(p.logPath), r); err != nil {
		return fmt.Errorf("record %s (pid %d): %w", path, p.pid, err)
	}
	return nil
}

// forget removes the record of a process that never ran.
func forget(logPath string) { _ = os.Remove(RecordPath(logPath)) }

// Reattach watches the process recorded for logPath (see Start) after a
// sandboxer restart: a helper such as virtiofsd, whose pid only the record
// holds. It fails with ErrNotFound when there is no record or the recorded
// process (pid and start time) no longer runs.
func Reattach(logPath string) (*Process, error) {
	r, err := procmark.Read(RecordPath(logPath))
	if err != nil {
		return nil, err
	}
	if r.Pid == 0 || !procmark.Alive(r.Proc()) {
		return nil, fmt.Errorf("%s (pid %d, recorded in %s) is gone: %w", r.Path, r.Pid, RecordPath(logPath), errdefs.ErrNotFound)
	}
	return watch(r.Proc(), logPath), nil
}
