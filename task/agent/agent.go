// Package agent is the kuasar guest agent: the code of the static binary
// kuasar-task that is /init in a micro-VM's initramfs. It serves
// containerd's Task API v3 and the kuasar.agent.v1.Agent service
// (package agentapi, the wire contract with the host) over ttrpc on the
// VM's host channel.
//
// Everything the agent compiles lives under task/agent: this package is
// the entry point (Main, Run, the re-exec helper), internal/service is the
// Task API and agent service (containers as namespaced Linux processes),
// internal/guestinit the PID-1 duties (base mounts, kernel modules, the
// host channel, the reaper, power-off). Nothing here runs on the host.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"time"

	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/unixsock"
	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/task/agent/internal/guestinit"
	"github.com/kuasar-go/kuasar/task/agent/internal/service"
	taskapi "github.com/kuasar-go/kuasar/task/agent/internal/taskpb"
)

// serialWait bounds how long the agent waits for the virtio-serial port.
const serialWait = 10 * time.Second

// idleWait bounds how long the agent waits for its pre-forked helper to
// start before it reports ready on the console anyway.
const idleWait = 10 * time.Second

// Options configure one run of the agent. The zero value serves on the VM
// channel named by the kernel command line, which is what /init does.
type Options struct {
	// Listen serves on this unix socket instead of the VM channel, so the
	// agent can be run and tested outside a VM (development).
	Listen string
	// Debug logs at debug level (the kernel command line can ask for it
	// too, with kuasar.debug).
	Debug bool
	// Version is what the agent reports in Ping, so the host can tell
	// which agent an initramfs carries.
	Version string
}

// IsHelper reports whether this process is the agent re-executed as a
// container set-up helper. The agent starts each container through a
// re-exec of its own binary, so main must call IsHelper first, before it
// parses flags, and hand over to RunHelper when it returns true.
func IsHelper() bool {
	return len(os.Args) > 1 && os.Args[1] == service.HelperInit
}

// RunHelper runs the container set-up helper (namespaces, root file system,
// then exec of the container's process). It does not return.
func RunHelper() {
	service.RunHelper()
	os.Exit(0)
}

// Main runs the agent process with o and never returns. An error is
// printed to stderr; as PID 1, where exiting would panic the kernel, the
// agent powers the VM off instead so the host sees the VM end and reads
// the console.
func Main(o Options) {
	err := Run(context.Background(), o)
	if err == nil {
		os.Exit(0)
	}
	fmt.Fprintf(os.Stderr, "kuasar-task: %v\n", err)
	if os.Getpid() == 1 {
		_ = guestinit.Poweroff(context.Background())
		select {}
	}
	os.Exit(1)
}

// Run serves the Task API and the agent service until ctx is cancelled or
// the listener closes. As PID 1 it first does the init duties (base mounts,
// console, kernel modules, shared mount propagation) and reads its
// configuration from the kernel command line; as an ordinary process it
// serves on o.Listen and stops on SIGINT or SIGTERM too.
func Run(ctx context.Context, o Options) error {
	pid1 := os.Getpid() == 1

	if pid1 {
		if err := guestinit.MountBase(ctx); err != nil {
			return err
		}
		// The kernel gives init /dev/console as fds 0-2 only if the
		// initramfs has the node; make sure they are open so no pipe or
		// socket ever lands on them.
		if c, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
			for fd := 0; fd <= 2; fd++ {
				_ = unix.Dup3(int(c.Fd()), fd, 0)
			}
			c.Close()
		}
		logrus.SetOutput(os.Stderr)
	}
	cfg := guestinit.Config{Debug: o.Debug}
	if pid1 {
		var err error
		if cfg, err = guestinit.ReadCmdline(); err != nil {
			return err
		}
	}
	logrus.SetFormatter(&logrus.TextFormatter{DisableTimestamp: false, FullTimestamp: true})
	if cfg.Debug || o.Debug {
		logrus.SetLevel(logrus.DebugLevel)
	} else if pid1 {
		logrus.SetLevel(logrus.ErrorLevel)
	}
	if pid1 {
		start := time.Now()
		loaded, err := guestinit.LoadModules(ctx, "/", guestinit.FinitModule)
		if err != nil {
			return err
		}
		log.G(ctx).WithField("modules", len(loaded)).WithField("took", time.Since(start)).Debug("modules loaded")
	}

	reaper := guestinit.GlobalReaper(ctx)
	var shutdown func()
	if pid1 {
		shutdown = func() { _ = guestinit.Poweroff(ctx) }
	}
	tasks := service.New(reaper, service.WithShutdown(shutdown), service.WithZygote())
	if pid1 {
		// The first container set-up helper is forked below, at boot: its
		// start-up overlaps finding the channel, and SetupSandbox's
		// mounts reach it because the tree is shared.
		if err := guestinit.ShareMounts(); err != nil {
			log.G(ctx).WithError(err).Warn("pre-forked helpers will be replaced after sandbox mounts")
		}
	}
	// idle is closed once the boot-time work that runs in the background
	// is done: the pre-forked helper waits for its config and the
	// encoders' caches are built.
	idle := make(chan struct{})
	go func() {
		defer close(idle)
		warmed := make(chan struct{})
		go func() { service.WarmUp(); close(warmed) }()
		if pid1 {
			tasks.Prewarm(ctx)
			if err := tasks.WaitZygoteParked(idleWait); err != nil {
				log.G(ctx).WithError(err).Warn("pre-forked helper not ready")
			}
		}
		<-warmed
	}()
	agentSvc := service.NewAgentService(tasks, service.WithVersion(o.Version))

	srv, err := ttrpc.NewServer()
	if err != nil {
		return fmt.Errorf("ttrpc server: %w", err)
	}
	taskapi.RegisterTTRPCTaskService(srv, tasks)
	agentapi.RegisterAgentService(srv, agentSvc)

	var l net.Listener
	stop := make(chan os.Signal, 1)
	if o.Listen != "" {
		if l, err = unixsock.Listen(o.Listen, 0o600); err != nil {
			return err
		}
		defer os.Remove(o.Listen)
		signal.Notify(stop, unix.SIGINT, unix.SIGTERM)
		defer signal.Stop(stop)
	} else if l, err = guestinit.Listen(ctx, cfg, serialWait); err != nil {
		return err
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-stop:
		case <-ctx.Done():
		case <-done:
			return
		}
		srv.Close()
	}()
	log.G(ctx).WithField("addr", l.Addr().String()).WithField("version", o.Version).Info("kuasar-task serving")
	if pid1 {
		// The console line tells the host the guest is ready and idle:
		// a VM template is saved when it appears (vm/internal/qemu
		// AgentReadyLine), so it is printed once the background work
		// above is done and a restored clone does none of it again.
		// Requests are served meanwhile (a cold boot's host does not
		// wait for the line).
		go func() {
			select {
			case <-idle:
			case <-done:
				return
			}
			fmt.Fprintf(os.Stderr, "kuasar-task %s: serving on %s\n", o.Version, l.Addr())
		}()
	}
	err = srv.Serve(ctx, l)
	if errors.Is(err, ttrpc.ErrServerClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
