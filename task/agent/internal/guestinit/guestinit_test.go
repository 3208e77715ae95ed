package guestinit

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kuasar-go/kuasar/task/agent/agentapi"
)

func TestParseCmdline(t *testing.T) {
	tests := []struct {
		in      string
		want    Config
		wantErr string
	}{
		{"", Config{}, ""},
		{"console=hvc0 quiet panic=-1", Config{}, ""},
		{"quiet kuasar.channel=serial", Config{Channel: ChannelSerial}, ""},
		{"kuasar.channel=vsock kuasar.debug=1\n", Config{Channel: ChannelVsock, Debug: true}, ""},
		{"kuasar.debug", Config{Debug: true}, ""},
		{"kuasar.debug=1 kuasar.debug=0", Config{}, ""},
		{"kuasar.channelx=serial", Config{}, ""},
		{"kuasar.channel=tcp", Config{}, "kuasar.channel=serial or kuasar.channel=vsock"},
		{"kuasar.debug=maybe", Config{}, "kuasar.debug=1"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseCmdline(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want InvalidArgument mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseCmdline(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestLoadModules(t *testing.T) {
	eexistLoader := func(f *os.File) error { return nil }
	tests := []struct {
		name    string
		list    *string // nil: no list file
		files   []string
		failOn  string
		want    []string
		wantErr string
	}{
		{name: "no list: everything built in", list: nil, want: nil},
		{name: "empty list", list: ptr(""), want: nil},
		{name: "order kept, comments and blanks skipped", list: ptr("# console\nvirtio.ko\n\n  virtio_ring.ko  \nvirtio_console.ko\n"),
			files: []string{"virtio.ko", "virtio_ring.ko", "virtio_console.ko"}, want: []string{"virtio.ko", "virtio_ring.ko", "virtio_console.ko"}},
		{name: "missing module file", list: ptr("a.ko\nb.ko\n"), files: []string{"a.ko"}, want: []string{"a.ko"}, wantErr: "b.ko"},
		{name: "path escape refused", list: ptr("../../etc/shadow\n"), wantErr: "not a plain module file name"},
		{name: "loader failure names the module", list: ptr("a.ko\nbad.ko\nc.ko\n"), files: []string{"a.ko", "bad.ko", "c.ko"}, failOn: "bad.ko", want: []string{"a.ko"}, wantErr: "load module bad.ko"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			os.MkdirAll(filepath.Join(root, "etc/kuasar"), 0o755)
			os.MkdirAll(filepath.Join(root, "lib/modules"), 0o755)
			if tc.list != nil {
				os.WriteFile(filepath.Join(root, "etc/kuasar/modules.load"), []byte(*tc.list), 0o644)
			}
			for _, f := range tc.files {
				os.WriteFile(filepath.Join(root, "lib/modules", f), []byte("module "+f), 0o644)
			}
			var seen []string
			loader := func(f *os.File) error {
				b := make([]byte, 64)
				n, _ := f.Read(b)
				name := strings.TrimPrefix(string(b[:n]), "module ")
				if name == tc.failOn {
					return unix.ENOEXEC
				}
				seen = append(seen, name)
				return eexistLoader(f)
			}
			got, err := LoadModules(context.Background(), root, loader)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want mention of %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") || strings.Join(seen, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("loaded %v (loader saw %v), want %v", got, seen, tc.want)
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestFinitModuleRejectsNonModule(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_MODULE)")
	}
	f, err := os.CreateTemp(t.TempDir(), "bogus*.ko")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("this is not an ELF module")
	f.Seek(0, 0)
	defer f.Close()
	// The real syscall: a garbage file must fail (ENOEXEC, or EPERM where
	// module loading is locked down), never succeed.
	if err := FinitModule(f); err == nil {
		t.Fatal("finit_module accepted a non-module file")
	}
}

func TestFindSerialPort(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	mkPort := func(port, name string) {
		d := filepath.Join(sys, "class/virtio-ports", port)
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "name"), []byte(name+"\n"), 0o644)
		os.WriteFile(filepath.Join(dev, port), nil, 0o600)
	}
	mkPort("vport0p0", "org.qemu.guest_agent.0")
	ctx := context.Background()
	if _, err := FindSerialPort(ctx, sys, dev, SerialPortName, 100*time.Millisecond); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "virtserialport,name=kuasar.agent") {
		t.Fatalf("missing port: %v, want NotFound naming the QEMU device to add", err)
	}
	// The port appears while the agent waits (module loaded late).
	go func() {
		time.Sleep(100 * time.Millisecond)
		mkPort("vport1p1", SerialPortName)
	}()
	got, err := FindSerialPort(ctx, sys, dev, SerialPortName, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got != filepath.Join(dev, "vport1p1") {
		t.Fatalf("port = %s", got)
	}
}

type pingAgent struct{ agentapi.AgentService }

func (pingAgent) Ping(context.Context, *agentapi.PingRequest) (*agentapi.PingResponse, error) {
	return &agentapi.PingResponse{AgentVersion: "pty"}, nil
}

func (pingAgent) CloseStdin(context.Context, *agentapi.CloseStdinRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// TestFileListenerServesTTRPC serves ttrpc over a character device, as on
// the virtio-serial port, using a raw pseudo-terminal as the device.
func TestFileListenerServesTTRPC(t *testing.T) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no /dev/ptmx: %v", err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range []int{int(master.Fd())} {
		tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		makeRaw(tio)
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, tio); err != nil {
			t.Fatal(err)
		}
	}
	slave := "/dev/pts/" + itoa(n)
	// The slave side must be raw too; set it through a temporary handle.
	s, err := os.OpenFile(slave, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	tio, _ := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	makeRaw(tio)
	unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, tio)
	defer s.Close() // keep the pty alive between listener connections

	l := NewFileListener(slave)
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	agentapi.RegisterAgentService(srv, pingAgent{})
	go srv.Serve(context.Background(), l)
	defer srv.Close()

	client := ttrpc.NewClient(masterConn{master})
	defer client.Close()
	ag := agentapi.NewAgentClient(client)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		r, err := ag.Ping(ctx, &agentapi.PingRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if r.AgentVersion != "pty" {
			t.Fatalf("ping = %v", r)
		}
	}
	if l.Addr().String() != slave {
		t.Fatalf("addr = %s", l.Addr())
	}
	l.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept after close: %v", err)
	}
}

func makeRaw(t *unix.Termios) {
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
}

func itoa(n int) string { return strconv.Itoa(n) }

type masterConn struct{ *os.File }

func (masterConn) LocalAddr() net.Addr  { return fileAddr("master") }
func (masterConn) RemoteAddr() net.Addr { return fileAddr("slave") }

// TestFileListenerReopens checks that Accept waits for the device to appear
// (no error that would end the agent) and hands out a new connection after
// the previous one is closed, as when the host reconnects.
func TestFileListenerReopens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vport0p1")
	l := NewFileListener(path)
	l.Backoff = 10 * time.Millisecond
	defer l.Close()
	got := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	time.Sleep(50 * time.Millisecond)
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	var c1 net.Conn
	select {
	case c1 = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after the device appeared")
	}
	second := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		second <- c
	}()
	select {
	case <-second:
		t.Fatal("second Accept returned while the first connection is open")
	case <-time.After(100 * time.Millisecond):
	}
	c1.Close()
	select {
	case c2 := <-second:
		if c2 == nil {
			t.Fatal("no second connection")
		}
		c2.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not reopen after the connection closed")
	}
}
