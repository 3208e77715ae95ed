package stratovirt

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/vm/internal/qmp"
)

// QMP is a client for StratoVirt's QMP dialect: one client per socket,
// one command in flight, every command tagged with a string "id" that the
// reply echoes, asynchronous events interleaved and skipped.
type QMP struct {
	c    *qmp.Conn
	next atomic.Int64
}

// DialQMP connects to StratoVirt's QMP socket, reads the greeting and
// negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	return qmp.Open(ctx, "StratoVirt QMP", path, func(c *qmp.Conn) *QMP { return &QMP{c: c} })
}

// Execute runs one command and returns its "return" value.
func (q *QMP) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	id := "kuasar-" + strconv.FormatInt(q.next.Add(1), 10)
	ret, err := q.c.Execute(ctx, qmp.Command(command, id, args), func(m *qmp.Message) (bool, error) {
		var gotID string
		if len(m.ID) > 0 && json.Unmarshal(m.ID, &gotID) != nil {
			return false, fmt.Errorf("reply id %s is not a string: %w", m.ID, errdefs.ErrInvalidArgument)
		}
		// A different id is a late reply to an earlier, abandoned command.
		return gotID == "" || gotID == id, nil
	})
	if err != nil {
		return nil, fmt.Errorf("StratoVirt QMP %s: %w", command, err)
	}
	return ret, nil
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
