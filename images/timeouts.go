package images

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// Default registry timeouts. They are the ones containerd, Docker and
// Go's own http.DefaultTransport use or exceed (30 s to connect, 10 s for
// a TLS handshake there), lengthened where a slow registry is still a
// working one: a registry that has not answered a request or sent a byte
// of a blob for a minute is broken or hostile.
const (
	// DefaultConnectTimeout bounds DNS lookup plus TCP connect, and
	// separately the TLS handshake, of one connection to a registry.
	DefaultConnectTimeout = 30 * time.Second
	// DefaultResponseTimeout bounds the wait for a response's headers after
	// the request was sent, and every pause while reading a response body
	// (so a large blob may take as long as it needs while bytes flow).
	DefaultResponseTimeout = 60 * time.Second
)

// Timeouts bounds how long a registry may keep a pull or push waiting.
// Zero fields take the defaults; a negative field disables that timeout.
type Timeouts struct {
	// Connect bounds DNS lookup and TCP connect, and the TLS handshake.
	Connect time.Duration
	// Response bounds the wait for response headers and each idle pause
	// while reading a response body.
	Response time.Duration
}

// WithTimeouts sets the registry timeouts of a pull or push (see Timeouts).
// They apply to the HTTP client kuasar builds, not to one given with
// withHTTPClient.
func WithTimeouts(t Timeouts) Option { return func(o *options) { o.timeouts = t } }

func (t Timeouts) withDefaults() Timeouts {
	if t.Connect == 0 {
		t.Connect = DefaultConnectTimeout
	}
	if t.Response == 0 {
		t.Response = DefaultResponseTimeout
	}
	return t
}

// The phases of a registry request a TimeoutError can name.
const (
	PhaseConnect        = "connect"
	PhaseTLSHandshake   = "TLS handshake"
	PhaseResponseHeader = "response headers"
	PhaseBodyRead       = "body read"
)

// The CLI flags that set each timeout, named in TimeoutError messages.
const (
	flagConnectTimeout  = "--registry-connect-timeout"
	flagResponseTimeout = "--registry-timeout"
)

// TimeoutError reports a registry that did not answer in time. It wraps
// context.DeadlineExceeded, which errdefs.IsDeadlineExceeded recognises
// (errdefs has no sentinel of its own for it).
type TimeoutError struct {
	// Host is the registry's host[:port].
	Host string
	// Phase is which timeout fired (PhaseConnect, PhaseTLSHandshake,
	// PhaseResponseHeader or PhaseBodyRead).
	Phase string
	// Limit is the timeout that was exceeded.
	Limit time.Duration
	// Flag is the CLI flag that sets it.
	Flag string
}

// Error names the registry, the phase that timed out and the flag that
// raises the timeout.
func (e *TimeoutError) Error() string {
	what := map[string]string{
		PhaseConnect:        "could not be connected to",
		PhaseTLSHandshake:   "did not complete the TLS handshake",
		PhaseResponseHeader: "sent no response",
		PhaseBodyRead:       "stopped sending data",
	}[e.Phase]
	return fmt.Sprintf("registry %s %s within %v (%s timeout): check that the registry is up and reachable, or raise the timeout with %s for a slow one: %v",
		e.Host, what, e.Limit, e.Phase, e.Flag, context.DeadlineExceeded)
}

// Unwrap makes a TimeoutError a context.DeadlineExceeded (errdefs kind
// DeadlineExceeded).
func (e *TimeoutError) Unwrap() error { return context.DeadlineExceeded }

// Timeout reports true, as net.Error timeouts do.
func (e *TimeoutError) Timeout() bool { return true }

// PlainHTTPError reports an HTTPS request answered in plain HTTP: the
// registry has no TLS and must be reached with --plain-http.
type PlainHTTPError struct {
	// Host is the registry's host[:port].
	Host string
}

// Error names the registry and says to use --plain-http.
func (e *PlainHTTPError) Error() string {
	return fmt.Sprintf("registry %s answered an HTTPS request in plain HTTP: use --plain-http for a registry without TLS: %v", e.Host, errdefs.ErrUnavailable)
}

// Unwrap makes a PlainHTTPError an errdefs.ErrUnavailable.
func (e *PlainHTTPError) Unwrap() error { return errdefs.ErrUnavailable }

// transports caches one transport per Timeouts value so pulls share
// connection pools (and do not each leave idle connections behind).
var transports sync.Map // Timeouts -> http.RoundTripper

// registryTransport returns the shared transport enforcing t.
func registryTransport(t Timeouts) http.RoundTripper {
	t = t.withDefaults()
	if rt, ok := transports.Load(t); ok {
		return rt.(http.RoundTripper)
	}
	rt, _ := transports.LoadOrStore(t, newRegistryTransport(t))
	return rt.(http.RoundTripper)
}

// newRegistryTransport returns an HTTP transport to registries that
// enforces t. Every phase of a request runs under a timer that, when it
// fires, cancels the request with a TimeoutError as the cause, so the error
// says which timeout fired whatever layer of net/http reports it.
func newRegistryTransport(t Timeouts) http.RoundTripper {
	base := http.DefaultTransport.(*http.Transport).Clone()
	// The dialer and handshake have no timeouts of their own: the phase
	// timers below bound them, and name which one fired.
	base.DialContext = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	base.TLSHandshakeTimeout = 0
	base.ResponseHeaderTimeout = 0
	return &timeoutTransport{base: base, t: t.withDefaults()}
}

type timeoutTransport struct {
	base http.RoundTripper
	t    Timeouts
}

// phaseTimer cancels a request with a TimeoutError when the phase it was
// last armed for runs past its limit.
type phaseTimer struct {
	mu     sync.Mutex
	host   string
	cancel context.CancelCauseFunc
	timer  *time.Timer
	gen    int // invalidates a timer that fired after being re-armed
}

func (p *phaseTimer) arm(phase string, d time.Duration, flag string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	if d <= 0 {
		return
	}
	gen := p.gen
	p.timer = time.AfterFunc(d, func() {
		p.mu.Lock()
		live := gen == p.gen
		p.mu.Unlock()
		if live {
			p.cancel(&TimeoutError{Host: p.host, Phase: phase, Limit: d, Flag: flag})
		}
	})
}

func (p *phaseTimer) disarm() { p.arm("", 0, "") }

// causeOf returns the TimeoutError that cancelled ctx, if one did.
func causeOf(ctx context.Context) error {
	var te *TimeoutError
	if errors.As(context.Cause(ctx), &te) {
		return te
	}
	return nil
}

func (tt *timeoutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	pt := &phaseTimer{host: req.URL.Host, cancel: cancel}
	trace := &httptrace.ClientTrace{
		// DNS, TCP connect (and a proxy's CONNECT) run from GetConn to
		// GotConn; a reused connection gets there at once.
		GetConn: func(string) { pt.arm(PhaseConnect, tt.t.Connect, flagConnectTimeout) },
		TLSHandshakeStart: func() {
			pt.arm(PhaseTLSHandshake, tt.t.Connect, flagConnectTimeout)
		},
		TLSHandshakeDone: func(tls.ConnectionState, error) { pt.disarm() },
		GotConn:          func(httptrace.GotConnInfo) { pt.disarm() },
		// Request bodies (pushes) may take as long as they need to upload.
		WroteRequest: func(httptrace.WroteRequestInfo) {
			pt.arm(PhaseResponseHeader, tt.t.Response, flagResponseTimeout)
		},
	}
	req = req.WithContext(httptrace.WithClientTrace(ctx, trace))
	resp, err := tt.base.RoundTrip(req)
	pt.disarm()
	if err != nil {
		defer cancel(nil)
		if te := causeOf(ctx); te != nil {
			return nil, te
		}
		var rh tls.RecordHeaderError
		if errors.As(err, &rh) && string(rh.RecordHeader[:]) == "HTTP/" {
			return nil, &PlainHTTPError{Host: req.URL.Host}
		}
		return nil, err
	}
	resp.Body = &idleBody{rc: resp.Body, ctx: ctx, pt: pt, cancel: cancel, idle: tt.t.Response}
	return resp, nil
}

// idleBody fails a body read that waits longer than idle for data.
type idleBody struct {
	rc     io.ReadCloser
	ctx    context.Context
	pt     *phaseTimer
	cancel context.CancelCauseFunc
	idle   time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.pt.arm(PhaseBodyRead, b.idle, flagResponseTimeout)
	n, err := b.rc.Read(p)
	b.pt.disarm()
	if err != nil && err != io.EOF {
		if te := causeOf(b.ctx); te != nil {
			return n, te
		}
	}
	return n, err
}

func (b *idleBody) Close() error {
	err := b.rc.Close()
	b.pt.disarm()
	b.cancel(nil)
	return err
}
