package cloudhypervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// Client speaks Cloud Hypervisor's REST API over its --api-socket.
type Client struct {
	hc *http.Client
}

// NewClient returns a client for the API socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}
	return &Client{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (c *Client) do(ctx context.Context, method, endpoint string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost/api/v1/"+endpoint, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("cloud-hypervisor %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		var kind error = errdefs.ErrUnknown
		switch resp.StatusCode {
		case http.StatusBadRequest:
			kind = errdefs.ErrInvalidArgument
		case http.StatusNotFound:
			kind = errdefs.ErrNotFound
		case http.StatusConflict:
			kind = errdefs.ErrAlreadyExists
		case http.StatusMethodNotAllowed:
			kind = errdefs.ErrFailedPrecondition
		}
		return fmt.Errorf("cloud-hypervisor %s: HTTP %d: %s: %w", endpoint, resp.StatusCode, strings.TrimSpace(string(data)), kind)
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("cloud-hypervisor %s: bad answer: %w", endpoint, err)
		}
	}
	return nil
}

// Ping is GET /vmm.ping.
func (c *Client) Ping(ctx context.Context) (VmmPingResponse, error) {
	var r VmmPingResponse
	return r, c.do(ctx, http.MethodGet, "vmm.ping", nil, &r)
}

// Create is PUT /vm.create.
func (c *Client) Create(ctx context.Context, cfg VmConfig) error {
	return c.do(ctx, http.MethodPut, "vm.create", cfg, nil)
}

// Boot is PUT /vm.boot.
func (c *Client) Boot(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "vm.boot", nil, nil)
}

// Pause is PUT /vm.pause.
func (c *Client) Pause(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "vm.pause", nil, nil)
}

// Resume is PUT /vm.resume.
func (c *Client) Resume(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "vm.resume", nil, nil)
}

// Snapshot is PUT /vm.snapshot (the VM must be paused).
func (c *Client) Snapshot(ctx context.Context, cfg VmSnapshotConfig) error {
	return c.do(ctx, http.MethodPut, "vm.snapshot", cfg, nil)
}

// Restore is PUT /vm.restore (on a VMM without a VM).
func (c *Client) Restore(ctx context.Context, cfg RestoreConfig) error {
	return c.do(ctx, http.MethodPut, "vm.restore", cfg, nil)
}

// Shutdown is PUT /vm.shutdown.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "vm.shutdown", nil, nil)
}

// Delete is PUT /vm.delete.
func (c *Client) Delete(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "vm.delete", nil, nil)
}

// ShutdownVMM is PUT /vmm.shutdown: the VMM process exits.
func (c *Client) ShutdownVMM(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "vmm.shutdown", nil, nil)
}

// Info is GET /vm.info.
func (c *Client) Info(ctx context.Context) (VmInfo, error) {
	var r VmInfo
	return r, c.do(ctx, http.MethodGet, "vm.info", nil, &r)
}

// AddDisk is PUT /vm.add-disk.
func (c *Client) AddDisk(ctx context.Context, d DiskConfig) (PciDeviceInfo, error) {
	return c.add(ctx, "vm.add-disk", d)
}

// AddFs is PUT /vm.add-fs.
func (c *Client) AddFs(ctx context.Context, f FsConfig) (PciDeviceInfo, error) {
	return c.add(ctx, "vm.add-fs", f)
}

// AddNet is PUT /vm.add-net.
func (c *Client) AddNet(ctx context.Context, n NetConfig) (PciDeviceInfo, error) {
	return c.add(ctx, "vm.add-net", n)
}

// AddVsock is PUT /vm.add-vsock.
func (c *Client) AddVsock(ctx context.Context, v VsockConfig) (PciDeviceInfo, error) {
	return c.add(ctx, "vm.add-vsock", v)
}

// add hot-plugs a device: PUT endpoint with its config, answered by the
// PCI address it got.
func (c *Client) add(ctx context.Context, endpoint string, device any) (PciDeviceInfo, error) {
	var r PciDeviceInfo
	return r, c.do(ctx, http.MethodPut, endpoint, device, &r)
}

// DialHybridVsock connects to a guest AF_VSOCK port through Cloud
// Hypervisor's hybrid vsock: connect to the vsock unix socket, send
// "CONNECT <port>\n" and expect "OK <host port>\n".
func DialHybridVsock(ctx context.Context, socket string, port uint32) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", port); err != nil {
		conn.Close()
		return nil, err
	}
	// Read the reply byte by byte: anything after the newline belongs to
	// the guest's stream.
	var line []byte
	b := make([]byte, 1)
	for len(line) < 64 {
		if _, err := conn.Read(b); err != nil {
			conn.Close()
			return nil, fmt.Errorf("hybrid vsock CONNECT %d: %w", port, err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	if !strings.HasPrefix(string(line), "OK ") {
		conn.Close()
		return nil, fmt.Errorf("hybrid vsock CONNECT %d: answer %q: %w", port, line, errdefs.ErrUnavailable)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}
