package quark

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/crashpoint"
	"github.com/kuasar-go/kuasar/internal/procmark"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
)

// Name is the kind the Quark backend runs, as pods ask for it with
// kuasar.io/isolation: quark.
const Name = "quark"

// Backend starts Quark sandboxes (see the package documentation).
type Backend struct {
	cfg       Config
	osrelease string
	publisher events.Publisher
	timeout   time.Duration
}

var _ backend.Backend = (*Backend)(nil)

// Option configures a Backend.
type Option func(*Backend)

// WithPublisher sets where the task events of Quark containers go
// (containerd's event service); without it they are dropped.
func WithPublisher(p events.Publisher) Option { return func(b *Backend) { b.publisher = p } }

// WithKernelReleaseFile reads the kernel release from file instead of
// /proc/sys/kernel/osrelease (for tests of the kernel check).
func WithKernelReleaseFile(file string) Option { return func(b *Backend) { b.osrelease = file } }

// WithStartTimeout bounds how long a Start waits for the quark command to
// exit and for Quark's task socket to answer (default 30s).
func WithStartTimeout(d time.Duration) Option { return func(b *Backend) { b.timeout = d } }

// New returns the Quark backend. It does not fail when the host cannot run
// Quark: Check says why, and every Start fails with that reason, so a host
// without Quark still serves its other kinds of pods.
func New(cfg Config, opts ...Option) *Backend {
	b := &Backend{cfg: cfg, osrelease: "/proc/sys/kernel/osrelease", timeout: 30 * time.Second}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Name is "quark".
func (b *Backend) Name() string { return Name }

// Check verifies that this host can run Quark sandboxes: the quark binary
// exists, Quark's configuration asks for sandbox mode ("Sandboxed": true,
// "ShimMode": false) and the kernel is at least MinKernel. Each failure
// wraps errdefs.ErrFailedPrecondition and names the fix. The sandboxer
// runs it at start-up (and Start runs it again, so fixing the host needs
// no restart).
func (b *Backend) Check() error {
	_, err := check(b.cfg, b.osrelease)
	return err
}

// Command is the command line Start runs for sandbox id with its bundle,
// task socket and pid file, the way Kuasar drives Quark's sandbox mode;
// Quark forks the sandbox, writes its pid and exits.
func Command(bin, bundle, socket, id, pidFile string) []string {
	return []string{bin, "-r", bundle, "sandbox", "--task-socket", socket, "--id", id, "--pid-file", pidFile}
}

// Start writes the sandbox's bundle, runs the quark sandbox command in it,
// records the sandbox process (pid and start time) and connects to Quark's
// Task API. A failed Start kills what it started and leaves no socket.
func (b *Backend) Start(ctx context.Context, sb backend.Sandbox) (_ backend.Instance, retErr error) {
	bin, err := check(b.cfg, b.osrelease)
	if err != nil {
		return nil, fmt.Errorf("quark sandbox %s: %w", sb.ID, err)
	}
	bundle := filepath.Join(sb.StateDir, bundleDir)
	sock := filepath.Join(sb.StateDir, socketName)
	if len(sock) >= len(unix.RawSockaddrUnix{}.Path) {
		return nil, fmt.Errorf("quark task socket path %s is longer than a unix socket address allows: use a shorter sandboxer state_dir: %w", sock, errdefs.ErrInvalidArgument)
	}
	pidFile := filepath.Join(sb.StateDir, pidName)
	if err := writeSandboxBundle(bundle, sb); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	logPath := filepath.Join(sb.StateDir, logName)
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	// The sandbox process is recorded before quark runs and carries the
	// state directory as its mark (Quark forks it with quark's
	// environment): a sandboxer killed before it learns the pid leaves a
	// record that names the directory, and the mark finds the process
	// (sandboxer/reconcile.go, `kuasar run`'s dead runs).
	rec := filepath.Join(sb.StateDir, recordName)
	if err := procmark.Write(rec, procmark.Record{Owner: sb.StateDir, Path: bin}); err != nil {
		lf.Close()
		return nil, fmt.Errorf("quark sandbox %s: recording its process before the start: %w", sb.ID, err)
	}
	argv := Command(bin, bundle, sock, sb.ID, pidFile)
	cmd := exec.CommandContext(sctx, argv[0], argv[1:]...)
	cmd.Dir = bundle
	cmd.Env = append(os.Environ(), procmark.Pair(sb.StateDir))
	cmd.Stdout, cmd.Stderr = lf, lf
	runErr := cmd.Run()
	lf.Close()
	crashpoint.Hit("quark.started")
	// Whatever happened, a pid Quark wrote is a process to account for.
	p, perr := readPidFile(pidFile)
	defer func() {
		if retErr == nil {
			return
		}
		if p != nil {
			p.kill()
			p.close()
		}
		// And whatever it forked that carries the mark.
		if _, err := procmark.Reap(sb.StateDir); err != nil {
			log.G(ctx).WithField("sandbox", sb.ID).WithError(err).Warn("quark: kill the processes of a failed start")
		}
		os.Remove(sock)
		os.Remove(rec)
	}()
	if runErr != nil {
		return nil, fmt.Errorf("quark sandbox %s: %s failed: %w (its output: %q)", sb.ID, strings.Join(argv, " "), runErr, tail(logPath, 512))
	}
	if perr != nil {
		return nil, fmt.Errorf("quark sandbox %s: %w", sb.ID, perr)
	}
	if err := procmark.Write(rec, procmark.Record{Owner: sb.StateDir, Path: bin, Pid: p.pid, StartTime: p.start}); err != nil {
		return nil, fmt.Errorf("quark sandbox %s: recording its process: %w", sb.ID, err)
	}
	if err := writeProcessRecord(sb.StateDir, p); err != nil {
		return nil, fmt.Errorf("quark sandbox %s: recording its process: %w", sb.ID, err)
	}
	crashpoint.Hit("quark.recorded")
	client, err := dial(sctx, sock, p)
	if err != nil {
		return nil, fmt.Errorf("quark sandbox %s: task socket %s: %w (quark's output: %q)", sb.ID, sock, err, tail(logPath, 512))
	}
	if err := probe(sctx, client, p); err != nil {
		client.Close()
		return nil, fmt.Errorf("quark sandbox %s: task socket %s: %w (quark's output: %q)", sb.ID, sock, err, tail(logPath, 512))
	}
	inst := newInstance(sb, p, client, b.publisher)
	log.G(ctx).WithField("sandbox", sb.ID).WithField("pid", p.pid).Info("quark: sandbox started")
	return inst, nil
}

// Recover re-attaches to a sandbox whose Quark process still runs (same
// pid and start time), reconnecting to its task socket; otherwise it
// returns an instance reporting the sandbox exited (137) that can be shut
// down.
func (b *Backend) Recover(ctx context.Context, sb backend.Sandbox, cp []byte) (backend.Instance, error) {
	if len(cp) == 0 {
		// Started but not yet recorded by the sandboxer: Start's own record.
		cp, _ = os.ReadFile(filepath.Join(sb.StateDir, processName))
	}
	var rec processRecord
	if len(cp) > 0 {
		if err := json.Unmarshal(cp, &rec); err != nil {
			return nil, fmt.Errorf("quark checkpoint of sandbox %s: %w: %w", sb.ID, err, errdefs.ErrInvalidArgument)
		}
	}
	p, err := attach(rec.Pid, rec.StartTime)
	if err != nil {
		log.G(ctx).WithField("sandbox", sb.ID).WithError(err).Info("quark: sandbox process gone, sandbox reported exited")
		return exitedInstance(sb, b.publisher), nil
	}
	dctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	client, err := dial(dctx, filepath.Join(sb.StateDir, socketName), p)
	if err != nil {
		log.G(ctx).WithField("sandbox", sb.ID).WithError(err).Warn("quark: sandbox process runs but its task socket does not answer; killing it")
		p.kill()
		p.close()
		return exitedInstance(sb, b.publisher), nil
	}
	return newInstance(sb, p, client, b.publisher), nil
}

// dial connects to Quark's task socket, retrying until it answers, ctx is
// done or the process exits.
func dial(ctx context.Context, sock string, p *process) (*ttrpc.Client, error) {
	for {
		conn, err := (&net.Dialer{}).DialContext(ctx, "unix", sock)
		if err == nil {
			return ttrpc.NewClient(conn), nil
		}
		if p.exited() {
			return nil, fmt.Errorf("quark's sandbox process %d exited before serving its task socket: %w", p.pid, errdefs.ErrUnavailable)
		}
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("no answer (%v): %w: %w", err, ctx.Err(), errdefs.ErrUnavailable)
		case <-p.done:
		case <-t.C:
		}
		t.Stop()
	}
}

// Probes of Quark's Task API: a socket that accepts a connection proves
// nothing (a hung Quark accepts and never answers), so Start asks one
// question, each try bounded by its own deadline.
const (
	// probeTimeout bounds one probe.
	probeTimeout = 3 * time.Second
	// probeAttempts is how many probes may go unanswered before Start
	// gives up.
	probeAttempts = 3
)

// probe asks Quark's Task API a question (Connect, which every Task API
// server answers, if only with an error) until it answers, each try
// bounded by probeTimeout: a server that answers anything serves. It fails
// once probeAttempts went unanswered, the connection is closed, the
// process exits or ctx ends.
func probe(ctx context.Context, c *ttrpc.Client, p *process) error {
	tasks := NewV2Bridge(c)
	var last error
	for range probeAttempts {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		_, err := tasks.Connect(pctx, &taskAPI.ConnectRequest{})
		timedOut := pctx.Err() != nil
		cancel()
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("no answer to a Connect probe: %w: %w", ctx.Err(), errdefs.ErrUnavailable)
		case p.exited():
			return fmt.Errorf("quark's sandbox process %d exited before answering a Connect probe: %w", p.pid, errdefs.ErrUnavailable)
		case !timedOut && errors.Is(err, ttrpc.ErrClosed):
			return fmt.Errorf("quark closed the connection instead of answering a Connect probe: %w: %w", err, errdefs.ErrUnavailable)
		case !timedOut:
			return nil // answered (an error reply is an answer)
		}
		last = err
	}
	return fmt.Errorf("accepted the connection but answered none of %d Connect probes within %v each (%v): Quark hangs; see its log: %w",
		probeAttempts, probeTimeout, last, errdefs.ErrUnavailable)
}

// readPidFile reads the pid Quark wrote and records its process.
func readPidFile(file string) (*process, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("quark wrote no pid file %s: %w: %w", file, err, errdefs.ErrUnavailable)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return nil, fmt.Errorf("quark's pid file %s holds %q, not a pid: %w", file, b, errdefs.ErrUnavailable)
	}
	st, err := startTime(pid)
	if err != nil {
		return nil, fmt.Errorf("quark's sandbox process %d (from %s) is not running: %w: %w", pid, file, err, errdefs.ErrUnavailable)
	}
	return attach(pid, st)
}

// processRecord is what Recover needs to find the sandbox process again:
// a pid alone could have been reused by another process since.
type processRecord struct {
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
}

func writeProcessRecord(dir string, p *process) error {
	b, _ := json.Marshal(processRecord{Pid: p.pid, StartTime: p.start})
	f, err := os.OpenFile(filepath.Join(dir, processName), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return errors.Join(err, f.Close())
}

// tail is the last n bytes of file, for error messages.
func tail(file string, n int) string {
	b, _ := os.ReadFile(file)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}
