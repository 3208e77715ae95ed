// Command kuasar-task is the kuasar guest agent: the static binary that is
// /init in a micro-VM's initramfs. As PID 1 it mounts the base file systems,
// loads the kernel modules listed in /etc/kuasar/modules.load, opens the
// host channel (virtio-serial port kuasar.agent or vsock port 1024) and
// serves containerd's Task API v3 and kuasar.agent.v1.Agent over ttrpc on it.
//
// Outside a VM it can serve on a unix socket for development:
//
//	kuasar-task --listen /run/kuasar-task.sock
package main

import (
	"context"
	"errors"
	"flag"
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
	"github.com/kuasar-go/kuasar/task/agent"
	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/task/agent/guestinit"
	taskapi "github.com/kuasar-go/kuasar/task/agent/taskpb"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

// serialWait bounds how long the agent waits for the virtio-serial port.
const serialWait = 10 * time.Second

func main() {
	if len(os.Args) > 1 && os.Args[1] == agent.HelperInit {
		agent.RunHelper()
		return
	}
	err := run()
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "kuasar-task: %v\n", err)
	if os.Getpid() == 1 {
		// PID 1 must not exit (the kernel would panic): power off instead
		// so the host sees the VM end and reads the console.
		_ = guestinit.Poweroff(context.Background())
		select {}
	}
	os.Exit(1)
}

func run() error {
	listen := flag.String("listen", "", "serve on this unix socket instead of the VM channel (development)")
	debug := flag.Bool("debug", false, "log at debug level")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return nil
	}
	ctx := context.Background()
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
	cfg := guestinit.Config{Debug: *debug}
	if pid1 {
		var err error
		if cfg, err = guestinit.ReadCmdline(); err != nil {
			return err
		}
	}
	logrus.SetFormatter(&logrus.TextFormatter{DisableTimestamp: false, FullTimestamp: true})
	if cfg.Debug || *debug {
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
	tasks := agent.New(reaper, agent.WithShutdown(shutdown), agent.WithZygote())
	if pid1 {
		// Fork the first container set-up helper now: its start-up
		// overlaps finding the channel and the host's Ping and
		// SetupSandbox, whose mounts reach it because the tree is shared.
		if err := guestinit.ShareMounts(); err != nil {
			log.G(ctx).WithError(err).Warn("pre-forked helpers will be replaced after sandbox mounts")
		}
		go tasks.Prewarm(ctx)
	}
	go agent.WarmUp()
	agent := agent.NewAgentService(tasks, agent.WithVersion(version))

	srv, err := ttrpc.NewServer()
	if err != nil {
		return fmt.Errorf("ttrpc server: %w", err)
	}
	taskapi.RegisterTTRPCTaskService(srv, tasks)
	agentapi.RegisterAgentService(srv, agent)

	var l net.Listener
	if *listen != "" {
		if l, err = unixsock.Listen(*listen, 0o600); err != nil {
			return err
		}
		defer os.Remove(*listen)
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, unix.SIGINT, unix.SIGTERM)
		go func() {
			<-sigs
			srv.Close()
		}()
	} else if l, err = guestinit.Listen(ctx, cfg, serialWait); err != nil {
		return err
	}
	log.G(ctx).WithField("addr", l.Addr().String()).WithField("version", version).Info("kuasar-task serving")
	if pid1 {
		fmt.Fprintf(os.Stderr, "kuasar-task %s: serving on %s\n", version, l.Addr())
	}
	err = srv.Serve(ctx, l)
	if errors.Is(err, ttrpc.ErrServerClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
