package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/kuasar-go/kuasar/vm/internal/qmp"
)

// QMP is a client for QEMU's machine protocol on a unix socket: it reads
// the greeting, negotiates capabilities, and runs one command at a time,
// skipping the asynchronous events QEMU interleaves with replies. Every
// command carries a numeric id that QEMU echoes, so the late reply to a
// command abandoned at its deadline (a probe of a stalled QEMU) is never
// taken for the reply to the next one.
type QMP struct {
	c    *qmp.Conn
	next atomic.Int64
}

// DialQMP connects to the QMP socket at path and negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	return qmp.Open(ctx, "QMP", path, func(c *qmp.Conn) *QMP { return &QMP{c: c} })
}

// Execute runs one QMP command and returns its "return" value.
func (q *QMP) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	id := q.next.Add(1)
	req := qmp.Command(command, "", args)
	req["id"] = id
	ret, err := q.c.Execute(ctx, req, func(m *qmp.Message) (bool, error) {
		// No id: a reply to a command sent without one (none are).
		// Another id: the late reply to an abandoned command.
		return len(m.ID) == 0 || string(m.ID) == strconv.FormatInt(id, 10), nil
	})
	if err != nil {
		return nil, fmt.Errorf("QMP %s: %w", command, err)
	}
	return ret, nil
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
func (q *QMP) Close() error { return q.c.Close() }
