package guestinit

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/mdlayher/vsock"
)

const (
	// SerialPortName is the name of the virtio-serial port the host adds
	// with -device virtserialport,name=kuasar.agent.
	SerialPortName = "kuasar.agent"
	// VsockPort is the AF_VSOCK port the agent listens on.
	VsockPort = 1024
)

// FindSerialPort polls sysDir/class/virtio-ports/*/name until a port called
// name appears and returns its device node devDir/<vportNpM>. It gives up
// with ErrNotFound after timeout (or when ctx ends): a missing port means the
// host did not add the device or the virtio_console module is not loaded.
func FindSerialPort(ctx context.Context, sysDir, devDir, name string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		matches, _ := filepath.Glob(filepath.Join(sysDir, "class/virtio-ports/*/name"))
		for _, m := range matches {
			b, err := os.ReadFile(m)
			if err != nil {
				continue
			}
			if strings.TrimSpace(string(b)) == name {
				dev := filepath.Join(devDir, filepath.Base(filepath.Dir(m)))
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("virtio-serial port %q not found under %s/class/virtio-ports after %s; the host must add -device virtserialport,name=%s and the guest needs virtio_console: %w", name, sysDir, timeout, name, errdefs.ErrNotFound)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Listen opens the host channel chosen by cfg.Channel and returns a listener
// the ttrpc server can Serve. For the serial port it is a listener that hands
// out one connection at a time over the port (re-opened after the host
// disconnects); for vsock it is a real AF_VSOCK listener on VsockPort.
func Listen(ctx context.Context, cfg Config, serialWait time.Duration) (net.Listener, error) {
	switch cfg.Channel {
	case ChannelSerial:
		dev, err := FindSerialPort(ctx, "/sys", "/dev", SerialPortName, serialWait)
		if err != nil {
			return nil, err
		}
		return NewFileListener(dev), nil
	case ChannelVsock:
		l, err := vsock.Listen(VsockPort, nil)
		if err != nil {
			return nil, fmt.Errorf("listen on vsock port %d: %w (the guest needs the vsock transport modules)", VsockPort, err)
		}
		return l, nil
	default:
		dev, serr := FindSerialPort(ctx, "/sys", "/dev", SerialPortName, serialWait)
		if serr == nil {
			return NewFileListener(dev), nil
		}
		l, verr := vsock.Listen(VsockPort, nil)
		if verr != nil {
			return nil, fmt.Errorf("no agent channel: %w; vsock port %d: %w: %w", serr, VsockPort, verr, errdefs.ErrUnavailable)
		}
		log.G(ctx).WithField("port", VsockPort).Info("no virtio-serial port, listening on vsock")
		return l, nil
	}
}

// FileListener is a net.Listener over a character device such as a
// virtio-serial port: Accept opens the device and returns it as a
// connection, and blocks until that connection is closed before opening it
// again. This lets a ttrpc server "serve" a byte pipe that has no accept.
type FileListener struct {
	path   string
	once   sync.Once
	closed chan struct{}
	mu     sync.Mutex
	cur    chan struct{} // closed when the current connection is closed
	// Backoff is the pause before re-opening the device after a connection
	// ended, so a disconnected host does not make Accept spin.
	Backoff time.Duration
}

// NewFileListener returns a FileListener for the device at path.
func NewFileListener(path string) *FileListener {
	return &FileListener{path: path, closed: make(chan struct{}), Backoff: 200 * time.Millisecond}
}

// Accept implements net.Listener. It blocks while the previous connection
// is open, then (re)opens the device, retrying with back-off while it cannot
// be opened: a transient failure must not end the agent, which as PID 1
// would power the VM off. It fails only once the listener is closed.
func (l *FileListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	cur := l.cur
	l.mu.Unlock()
	if cur != nil {
		select {
		case <-cur:
		case <-l.closed:
			return nil, net.ErrClosed
		}
		if !l.sleep(l.Backoff) {
			return nil, net.ErrClosed
		}
	}
	delay := l.Backoff
	for {
		select {
		case <-l.closed:
			return nil, net.ErrClosed
		default:
		}
		f, err := os.OpenFile(l.path, os.O_RDWR, 0)
		if err == nil {
			done := make(chan struct{})
			l.mu.Lock()
			l.cur = done
			l.mu.Unlock()
			return &fileConn{File: f, done: done, addr: fileAddr(l.path)}, nil
		}
		log.L.WithError(err).WithField("path", l.path).Warn("cannot open agent channel, retrying")
		if !l.sleep(delay) {
			return nil, net.ErrClosed
		}
		delay = min(2*delay+time.Millisecond, 2*time.Second)
	}
}

func (l *FileListener) sleep(d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-l.closed:
		return false
	}
}

// Close implements net.Listener; it does not close an accepted connection.
func (l *FileListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr implements net.Listener.
func (l *FileListener) Addr() net.Addr { return fileAddr(l.path) }

type fileAddr string

func (a fileAddr) Network() string { return "file" }
func (a fileAddr) String() string  { return string(a) }

type fileConn struct {
	*os.File
	done     chan struct{}
	doneOnce sync.Once
	addr     fileAddr
}

func (c *fileConn) Close() error {
	err := c.File.Close()
	c.doneOnce.Do(func() { close(c.done) })
	return err
}

func (c *fileConn) LocalAddr() net.Addr  { return c.addr }
func (c *fileConn) RemoteAddr() net.Addr { return fileAddr("host") }
