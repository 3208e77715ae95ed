package stratovirt

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/vm/internal/qmp"
)

// QMP is a client for StratoVirt's QMP dialect: one client per socket,
// one command in flight, every command tagged with a string "id" that the
// reply echoes, asynchronous events interleaved and skipped.
type QMP struct {
	c    *qmp.Conn
	mu   sync.Mutex
	next int
}

// DialQMP connects to StratoVirt's QMP socket, reads the greeting and
// negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	c, err := qmp.Dial(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("StratoVirt QMP: %w", err)
	}
	q := &QMP{c: c}
	if _, err := q.Execute(ctx, "qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

// Execute runs one command and returns its "return" value.
func (q *QMP) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	q.next++
	id := "kuasar-" + strconv.Itoa(q.next)
	q.mu.Unlock()
	req := map[string]any{"execute": command, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	m, err := q.c.Exchange(ctx, req, func(m *qmp.Message) (bool, error) {
		var gotID string
		if len(m.ID) > 0 && json.Unmarshal(m.ID, &gotID) != nil {
			return false, fmt.Errorf("reply id %s is not a string: %w", m.ID, errdefs.ErrInvalidArgument)
		}
		// A different id is a late reply to an earlier, abandoned command.
		return gotID == "" || gotID == id, nil
	})
	if err == nil {
		err = m.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("StratoVirt QMP %s: %w", command, err)
	}
	return m.Return, nil
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
func (q *QMP) Close() error { return q.c.Close() }
