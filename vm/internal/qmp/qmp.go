// Package qmp is the framing QEMU's machine protocol and StratoVirt's
// dialect of it share: a unix socket carrying one JSON object per line, a
// greeting, one command at a time, and asynchronous events interleaved
// with the replies. What differs between the two (command ids, which
// replies to wait for) stays in the drivers, which pass it in.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/vm/internal/vmm"
)

// DefaultTimeout bounds an exchange whose context has no deadline.
const DefaultTimeout = 10 * time.Second

// ProbeTimeout bounds one health probe of a running VMM: one connect and
// greeting, or one command and its reply. A monitor that answers nothing
// within it is counted as not answering, whatever deadline the caller's
// context carries (the agent timeout at a sandbox start is 60-90 s, far
// too long to learn that the VMM is stuck).
const ProbeTimeout = 3 * time.Second

// Probe bounds ctx by ProbeTimeout for one probe.
func Probe(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, ProbeTimeout)
}

// maxEvents is how many recent event names a Conn keeps.
const maxEvents = 32

// Conn is one QMP connection. Exchanges are serialised: one command is in
// flight at a time.
type Conn struct {
	mu     sync.Mutex
	conn   net.Conn
	rd     *bufio.Reader
	events []string
}

// Message is one line from the peer: an event, or a reply carrying
// either a return value or an error.
type Message struct {
	// Event is the event name ("" for a reply).
	Event string `json:"event"`
	// ID is the id the reply echoes (raw: its type is the dialect's).
	ID json.RawMessage `json:"id"`
	// Return is the command's result.
	Return json.RawMessage `json:"return"`
	// Error is set when the command failed.
	Error *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

// Err turns an error reply into an *Error (of kind errdefs.ErrUnknown)
// naming the peer's class and description; it is nil for a successful
// reply.
func (m *Message) Err() error {
	if m.Error == nil {
		return nil
	}
	return &Error{Class: m.Error.Class, Desc: m.Error.Desc}
}

// Error is an error reply of the peer. Callers tell replies apart by
// Class with errors.As, never by the message text; its kind is
// errdefs.ErrUnknown (the peer said what failed, not why in our terms).
type Error struct {
	// Class is the QMP error class: GenericError, CommandNotFound,
	// DeviceNotActive, DeviceNotFound, KVMMissingCap.
	Class string
	// Desc is the peer's human-readable description.
	Desc string
}

// Error returns "class: description: unknown".
func (e *Error) Error() string {
	return e.Class + ": " + e.Desc + ": " + errdefs.ErrUnknown.Error()
}

// Unwrap returns errdefs.ErrUnknown, the error's kind.
func (e *Error) Unwrap() error { return errdefs.ErrUnknown }

// Deadline is ctx's deadline, or DefaultTimeout from now when it has none.
func Deadline(ctx context.Context) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(DefaultTimeout)
}

// Client is a driver's QMP client: it runs a command in its dialect.
type Client interface {
	// Execute runs command with args and returns its "return" value.
	Execute(ctx context.Context, command string, args any) (json.RawMessage, error)
}

// Open dials the QMP socket at path, wraps the connection in the
// driver's client and negotiates capabilities through it (so in the
// driver's dialect). The connection is closed when Open fails.
func Open[C Client](ctx context.Context, name, path string, wrap func(*Conn) C) (C, error) {
	var none C
	c, err := Dial(ctx, name, path)
	if err != nil {
		return none, err
	}
	client := wrap(c)
	if _, err := client.Execute(ctx, "qmp_capabilities", nil); err != nil {
		c.Close()
		return none, err
	}
	return client, nil
}

// Dial connects to the QMP socket at path and reads the greeting; it does
// not negotiate capabilities (see Open). A greeting that is missing or
// not QMP is ErrUnavailable. Errors start with name ("QMP").
func Dial(ctx context.Context, name, path string) (*Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("%s: connect to %s: %w", name, path, err)
	}
	c := &Conn{conn: conn, rd: bufio.NewReader(conn)}
	_ = conn.SetDeadline(Deadline(ctx))
	var greeting struct {
		QMP json.RawMessage `json:"QMP"`
	}
	line, err := c.rd.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &greeting)
	}
	if err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("%s greeting on %s: %v (got %q): %w", name, path, err, line, errdefs.ErrUnavailable)
	}
	_ = conn.SetDeadline(time.Time{})
	return c, nil
}

// Connect waits for the QMP socket at path of the VMM p has just started:
// it calls dial (the driver's client constructor) every interval until it
// answers, p exits or 10 s pass, then restricts the socket to 0600 (the
// VMM creates it with its umask). name ("qemu") and hint (appended to the
// VMM's log tail) word the ErrUnavailable error when p exits first.
func Connect[C any](ctx context.Context, p *vmm.Process, name, path, hint string, interval time.Duration, dial func(context.Context, string) (C, error)) (C, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var c C
	err := vmm.Poll(ctx, p, interval, func() (err error) {
		// Each attempt has its own deadline: a VMM that accepted the
		// connection but never greets is retried, not waited on.
		pctx, pcancel := Probe(ctx)
		defer pcancel()
		c, err = dial(pctx, path)
		return err
	}, func(exited bool, last error) error {
		if exited {
			return fmt.Errorf("%s exited during start-up: %s%s: %w", name, p.Tail(2000), hint, errdefs.ErrUnavailable)
		}
		return fmt.Errorf("%s QMP socket did not come up: %w: %w", name, errdefs.ErrUnavailable, last)
	})
	if err != nil {
		return c, err
	}
	_ = os.Chmod(path, 0o600)
	return c, nil
}

// Command is the request line for command with args (omitted when nil)
// and id (omitted when "").
func Command(command, id string, args any) map[string]any {
	req := map[string]any{"execute": command}
	if id != "" {
		req["id"] = id
	}
	if args != nil {
		req["arguments"] = args
	}
	return req
}

// Execute sends req and returns the "return" value of the first reply
// accept takes (an error reply becomes the error, see Message.Err).
// Errors name neither the peer nor the command: the driver adds both.
func (c *Conn) Execute(ctx context.Context, req any, accept func(*Message) (bool, error)) (json.RawMessage, error) {
	m, err := c.Exchange(ctx, req, accept)
	if err != nil {
		return nil, err
	}
	if err := m.Err(); err != nil {
		return nil, err
	}
	return m.Return, nil
}

// Exchange sends req (marshalled to one line) and returns the first reply
// that accept takes, skipping events (their names are kept, see Events).
// accept sees every reply; it returns false to skip one (a late reply to
// an abandoned command) or an error to give up. A nil accept takes the
// first reply. ctx's deadline (or DefaultTimeout) bounds the exchange.
func (c *Conn) Exchange(ctx context.Context, req any, accept func(*Message) (bool, error)) (*Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil, fmt.Errorf("connection closed: %w", errdefs.ErrUnavailable)
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	_ = c.conn.SetDeadline(Deadline(ctx))
	defer c.conn.SetDeadline(time.Time{})
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	for {
		line, err := c.rd.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("reading reply: %w", err)
		}
		m := new(Message)
		if err := json.Unmarshal(line, m); err != nil {
			return nil, fmt.Errorf("bad reply %q: %w", line, err)
		}
		if m.Event != "" {
			c.events = append(c.events, m.Event)
			if len(c.events) > maxEvents {
				c.events = c.events[1:]
			}
			continue
		}
		if accept != nil {
			ok, err := accept(m)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
		}
		return m, nil
	}
}

// Events returns the names of the events seen while waiting for replies
// (most recent last, at most 32), for diagnostics.
func (c *Conn) Events() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.events...)
}

// Close closes the connection; later exchanges fail with ErrUnavailable.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}
