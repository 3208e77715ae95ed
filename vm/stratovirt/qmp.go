package stratovirt

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// QMP is a client for StratoVirt's QMP dialect: one client per socket,
// one command in flight, every command tagged with a string "id" that the
// reply echoes, asynchronous events interleaved and skipped.
type QMP struct {
	mu   sync.Mutex
	conn net.Conn
	rd   *bufio.Reader
	next int
}

// DialQMP connects to StratoVirt's QMP socket, reads the greeting and
// negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to StratoVirt QMP %s: %w", path, err)
	}
	q := &QMP{conn: conn, rd: bufio.NewReader(conn)}
	_ = conn.SetDeadline(deadline(ctx))
	line, err := q.rd.ReadBytes('\n')
	var g struct {
		QMP json.RawMessage `json:"QMP"`
	}
	if err == nil {
		err = json.Unmarshal(line, &g)
	}
	if err != nil || g.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("StratoVirt QMP greeting: %v (got %q): %w", err, line, errdefs.ErrUnavailable)
	}
	if _, err := q.Execute(ctx, "qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func deadline(ctx context.Context) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(10 * time.Second)
}

// Execute runs one command and returns its "return" value.
func (q *QMP) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.conn == nil {
		return nil, fmt.Errorf("StratoVirt QMP closed: %w", errdefs.ErrUnavailable)
	}
	q.next++
	id := "kuasar-" + strconv.Itoa(q.next)
	req := map[string]any{"execute": command, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	_ = q.conn.SetDeadline(deadline(ctx))
	defer q.conn.SetDeadline(time.Time{})
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("StratoVirt QMP %s: %w", command, err)
	}
	for {
		line, err := q.rd.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("StratoVirt QMP %s: %w", command, err)
		}
		var m struct {
			Event  string          `json:"event"`
			ID     json.RawMessage `json:"id"`
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
		}
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, fmt.Errorf("StratoVirt QMP %s: bad reply %q: %w", command, line, err)
		}
		if m.Event != "" {
			continue
		}
		var gotID string
		if len(m.ID) > 0 && json.Unmarshal(m.ID, &gotID) != nil {
			return nil, fmt.Errorf("StratoVirt QMP %s: reply id %s is not a string: %w", command, m.ID, errdefs.ErrInvalidArgument)
		}
		if gotID != "" && gotID != id {
			// A late reply to an earlier, abandoned command.
			continue
		}
		if m.Error != nil {
			return nil, fmt.Errorf("StratoVirt QMP %s: %s: %s: %w", command, m.Error.Class, m.Error.Desc, errdefs.ErrUnknown)
		}
		return m.Return, nil
	}
}

// QueryStatus runs query-status and returns the run state.
func (q *QMP) QueryStatus(ctx context.Context) (string, error) {
	raw, err := q.Execute(ctx, "query-status", nil)
	if err != nil {
		return "", err
	}
	var s struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s.Status, nil
}

// Quit asks StratoVirt to exit.
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
