// Command standin is a STAND-IN for Quark's quark binary, for the tests of
// the quark backend only: Quark itself cannot be obtained on the
// development machine. It is not Quark and isolates nothing beyond runc.
//
// It honours the command line Kuasar runs Quark's sandbox mode with,
//
//	quark -r <bundle> sandbox --task-socket <sock> --id <id> --pid-file <file>
//
// the way Quark does: it forks a sandbox process, writes that process's pid
// to <file> and exits; the sandbox process serves the containerd Task API
// v2 (service containerd.task.v2.Task only, as Quark does) on <sock>, and
// resolves the bundle and stdio paths of each request below <bundle>, as
// Quark does in its root. It runs the containers with runc, through
// containerd's own runc shim task service.
//
// With $QUARK_STANDIN_RECORD set, it writes its argv and working directory
// there (JSON) so tests can check the exact command line.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	runctask "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
)

// args is the parsed command line.
type args struct {
	root, socket, id, pidFile string
}

const usage = "usage (stand-in for quark): quark -r <bundle> sandbox --task-socket <sock> --id <id> --pid-file <file>"

// parse accepts exactly Quark's sandbox command line: the global -r before
// the subcommand, the three required subcommand flags in any order.
func parse(argv []string) (args, error) {
	var a args
	if len(argv) != 9 || argv[0] != "-r" || argv[2] != "sandbox" {
		return a, fmt.Errorf("unexpected command line %q", argv)
	}
	a.root = argv[1]
	for i := 3; i < len(argv); i += 2 {
		switch argv[i] {
		case "--task-socket":
			a.socket = argv[i+1]
		case "--id":
			a.id = argv[i+1]
		case "--pid-file":
			a.pidFile = argv[i+1]
		default:
			return a, fmt.Errorf("unknown flag %q", argv[i])
		}
	}
	if a.root == "" || a.socket == "" || a.id == "" || a.pidFile == "" {
		return a, fmt.Errorf("missing a required flag in %q", argv)
	}
	return a, nil
}

const serveEnv = "QUARK_STANDIN_SERVE"

// muteEnv set to 1 makes the sandbox process accept connections on its
// task socket and never answer (a hung Quark, for the tests of the
// backend's probe deadline).
const muteEnv = "QUARK_STANDIN_MUTE"

func main() {
	a, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "quark stand-in:", err)
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if os.Getenv(serveEnv) == "1" {
		if err := serve(a); err != nil {
			fmt.Fprintln(os.Stderr, "quark stand-in sandbox:", err)
			os.Exit(1)
		}
		return
	}
	if err := launch(a); err != nil {
		fmt.Fprintln(os.Stderr, "quark stand-in:", err)
		os.Exit(1)
	}
}

// launch records the command line, forks the sandbox process (this binary
// again, in its own session), waits until it serves the socket, writes its
// pid to the pid file and returns.
func launch(a args) error {
	if rec := os.Getenv("QUARK_STANDIN_RECORD"); rec != "" {
		wd, _ := os.Getwd()
		b, _ := json.Marshal(map[string]any{"argv": os.Args, "cwd": wd})
		if err := os.WriteFile(rec, b, 0o600); err != nil {
			return err
		}
	}
	cfg, err := os.ReadFile(filepath.Join(a.root, "config.json"))
	if err != nil || !json.Valid(cfg) {
		return fmt.Errorf("no valid sandbox bundle at %s (config.json: %v)", a.root, err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), serveEnv+"=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	w.Close()
	buf := make([]byte, 2)
	n, _ := r.Read(buf)
	r.Close()
	if string(buf[:n]) != "ok" {
		cmd.Process.Kill()
		cmd.Wait()
		return fmt.Errorf("the sandbox process failed to serve %s", a.socket)
	}
	f, err := os.OpenFile(a.pidFile, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		cmd.Process.Kill()
		return err
	}
	_, err = f.WriteString(strconv.Itoa(cmd.Process.Pid))
	f.Close()
	// The sandbox process is left running; its parent is gone when this
	// returns, as with Quark.
	cmd.Process.Release()
	return err
}

// serve is the sandbox process: the Task API v2 on the socket, containers
// run by runc.
func serve(a args) error {
	ready := os.NewFile(3, "ready")
	if err := reaper.SetSubreaper(1); err != nil {
		return err
	}
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT)
	ctx, sd := shutdown.WithShutdown(context.Background())
	svc, err := runctask.NewTaskService(ctx, nopPublisher{}, sd)
	if err != nil {
		return err
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	taskv2.RegisterTTRPCTaskService(srv, &v2Server{root: a.root, svc: svc})
	os.Remove(a.socket)
	l, err := net.Listen("unix", a.socket)
	if err != nil {
		return err
	}
	if os.Getenv(muteEnv) == "1" {
		// A hung Quark: every connection is accepted and never answered.
		go func() {
			var held []net.Conn
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				held = append(held, c)
			}
		}()
	} else {
		go func() { _ = srv.Serve(ctx, l) }()
	}
	ready.WriteString("ok")
	ready.Close()
loop:
	for {
		select {
		case s := <-sigs:
			if s == unix.SIGCHLD {
				_ = reaper.Reap()
				continue
			}
			sd.Shutdown()
		case <-sd.Done():
			break loop
		}
	}
	srv.Close()
	os.Remove(a.socket)
	return nil
}

// nopPublisher drops the runc service's events: the sandboxer's forwarder
// publishes the task events, as it must for Quark, which publishes none.
type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, string, events.Event) error { return nil }
func (nopPublisher) Close() error                                        { return nil }
