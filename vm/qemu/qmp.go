package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// QMP is a client for QEMU's machine protocol on a unix socket: it reads
// the greeting, negotiates capabilities, and runs one command at a time,
// skipping the asynchronous events QEMU interleaves with replies.
type QMP struct {
	mu   sync.Mutex
	conn net.Conn
	rd   *bufio.Reader
	// Events collects the names of the events seen while waiting for
	// replies (most recent last, capped), for diagnostics.
	events []string
}

// DialQMP connects to the QMP socket at path and negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to QMP socket %s: %w", path, err)
	}
	q := &QMP{conn: conn, rd: bufio.NewReader(conn)}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	var greeting struct {
		QMP *json.RawMessage `json:"QMP"`
	}
	line, err := q.rd.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &greeting)
	}
	if err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("QMP greeting on %s: %v (got %q): %w", path, err, line, errdefs.ErrUnavailable)
	}
	_ = conn.SetDeadline(time.Time{})
	if _, err := q.Execute(ctx, "qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// Execute runs one QMP command and returns its "return" value.
func (q *QMP) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.conn == nil {
		return nil, fmt.Errorf("QMP connection closed: %w", errdefs.ErrUnavailable)
	}
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	if dl, ok := ctx.Deadline(); ok {
		_ = q.conn.SetDeadline(dl)
	} else {
		_ = q.conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	defer q.conn.SetDeadline(time.Time{})
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("QMP %s: %w", command, err)
	}
	for {
		line, err := q.rd.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("QMP %s: reading reply: %w", command, err)
		}
		var msg struct {
			Event  string          `json:"event"`
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
		}
		if err := json.Unmarshal(line, &msg); err != nil {
			return nil, fmt.Errorf("QMP %s: bad reply %q: %w", command, line, err)
		}
		switch {
		case msg.Event != "":
			q.events = append(q.events, msg.Event)
			if len(q.events) > 32 {
				q.events = q.events[1:]
			}
			continue
		case msg.Error != nil:
			return nil, fmt.Errorf("QMP %s: %s: %s: %w", command, msg.Error.Class, msg.Error.Desc, errdefs.ErrUnknown)
		default:
			return msg.Return, nil
		}
	}
}

// Status is the answer to query-status.
type Status struct {
	// Status is QEMU's run state: "running", "paused", "internal-error",
	// "guest-panicked", "shutdown"...
	Status string `json:"status"`
	// Running reports whether the vCPUs run.
	Running bool `json:"running"`
}

// QueryStatus runs query-status.
func (q *QMP) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	raw, err := q.Execute(ctx, "query-status", nil)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return s, fmt.Errorf("QMP query-status: %w", err)
	}
	return s, nil
}

// Quit asks QEMU to exit. The connection may close before the reply.
func (q *QMP) Quit(ctx context.Context) error {
	_, err := q.Execute(ctx, "quit", nil)
	return err
}

// Close closes the connection.
func (q *QMP) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.conn == nil {
		return nil
	}
	err := q.conn.Close()
	q.conn = nil
	return err
}
