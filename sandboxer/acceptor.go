package sandboxer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
)

// acceptor accepts the connections of every sandbox's Task API listening
// socket on one goroutine (epoll over all of them), and hands each to its
// sandbox's ttrpc server: an idle sandbox then parks no accept loop of its
// own. Each sandbox keeps its own socket, because containerd dials the
// address its Start returned and the Task API's requests do not name the
// sandbox.
type acceptor struct {
	epfd int
	wake int // eventfd that ends run (token 0)

	mu     sync.Mutex
	closed bool
	next   uint32
	socks  map[uint32]*acceptSock
}

// acceptSock is one listening socket.
type acceptSock struct {
	// mu is held while the socket is accepted on and when it is closed,
	// so that no accept runs on a closed (and maybe reused) descriptor.
	mu    sync.Mutex
	fd    int // -1 once closed
	path  string
	token uint32 // the epoll event's data, never a descriptor
	srv   *ttrpc.Server
	ctx   context.Context
}

// open starts the acceptor's goroutine.
func (a *acceptor) open() error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("task socket acceptor: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err == nil {
		err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: 0})
		if err != nil {
			unix.Close(wake)
		}
	}
	if err != nil {
		unix.Close(epfd)
		return fmt.Errorf("task socket acceptor: %w", err)
	}
	a.epfd, a.wake, a.socks = epfd, wake, map[uint32]*acceptSock{}
	go a.run()
	return nil
}

// close ends the acceptor's goroutine, which closes its descriptors. The
// sockets still added stop being accepted on.
func (a *acceptor) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.socks == nil || a.closed {
		return
	}
	a.closed = true
	unix.Write(a.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
}

// add starts accepting for srv on fd, a non-blocking listening socket at
// path (unixsock.ListenFD's). It takes fd (closed on error, with the file
// removed) and returns a function that stops accepting, closes the socket
// and removes its file.
func (a *acceptor) add(ctx context.Context, fd int, path string, srv *ttrpc.Server) (func(), error) {
	s := &acceptSock{fd: fd, path: path, srv: srv, ctx: context.WithoutCancel(ctx)}
	a.mu.Lock()
	if a.socks == nil || a.closed {
		a.mu.Unlock()
		unix.Close(fd)
		os.Remove(path)
		return nil, fmt.Errorf("task socket %s: the sandboxer is closing: %w", path, errdefs.ErrUnavailable)
	}
	for a.next++; a.next == 0 || a.socks[a.next] != nil; a.next++ {
	}
	s.token = a.next
	a.socks[s.token] = s
	a.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(s.token)}
	if err := unix.EpollCtl(a.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		a.remove(s)
		return nil, fmt.Errorf("task socket %s: %w", path, err)
	}
	return func() { a.remove(s) }, nil
}

// remove stops accepting on s and closes it, removing its file.
func (a *acceptor) remove(s *acceptSock) {
	a.mu.Lock()
	delete(a.socks, s.token)
	a.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return
	}
	unix.EpollCtl(a.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
	unix.Close(s.fd)
	s.fd = -1
	os.Remove(s.path)
}

// run waits for connections on every socket and accepts them.
func (a *acceptor) run() {
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(a.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			log.L.WithError(err).Error("task socket acceptor stopped: no sandbox's Task API accepts connections any more")
			return
		}
		for _, ev := range events[:n] {
			a.mu.Lock()
			if a.closed {
				a.mu.Unlock()
				unix.Close(a.wake)
				unix.Close(a.epfd)
				return
			}
			s := a.socks[uint32(ev.Fd)]
			a.mu.Unlock()
			if s != nil {
				s.accept()
			}
		}
	}
}

// accept accepts one pending connection of s. The socket is registered
// level-triggered, so epoll reports it again while more connections wait:
// accepting one per event spares the accept(2) that would fail with EAGAIN
// after each connection (containerd dials once per task and sandbox).
func (s *acceptSock) accept() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.fd >= 0 {
		nfd, _, err := unix.Accept4(s.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			if err != unix.EAGAIN {
				log.G(s.ctx).WithError(err).WithField("socket", s.path).Warn("accept on task socket")
			}
			return
		}
		f := os.NewFile(uintptr(nfd), s.path)
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			log.G(s.ctx).WithError(err).WithField("socket", s.path).Warn("task socket connection")
			return
		}
		go serveConn(s.ctx, s.srv, c)
		return
	}
}

// serveConn hands c to srv: ttrpc serves a listener, so c is served
// through one that yields c once and then ends (the server keeps serving
// the connection on its own goroutines until either side closes it).
func serveConn(ctx context.Context, srv *ttrpc.Server, c net.Conn) {
	l := &oneConn{c: c}
	srv.Serve(ctx, l)
	if !l.taken {
		c.Close() // the server was closed before it took c
	}
}

// errServed ends a oneConn's Serve once its connection was taken.
var errServed = errors.New("connection handed to the server")

// oneConn is a net.Listener that yields one connection.
type oneConn struct {
	c     net.Conn
	taken bool
}

func (l *oneConn) Accept() (net.Conn, error) {
	if l.taken {
		return nil, errServed
	}
	l.taken = true
	return l.c, nil
}

func (l *oneConn) Close() error   { return nil }
func (l *oneConn) Addr() net.Addr { return l.c.LocalAddr() }
