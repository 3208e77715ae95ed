package qmp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// peer serves one connection on a fresh unix socket: it writes greeting,
// then answers each request line with the lines reply returns for it.
func peer(t *testing.T, greeting string, reply func(req string) []string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintln(c, greeting)
		rd := bufio.NewReader(c)
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				return
			}
			for _, r := range reply(strings.TrimSpace(line)) {
				fmt.Fprintln(c, r)
			}
		}
	}()
	return sock
}

const greeting = `{"QMP":{"version":{},"capabilities":[]}}`

func TestExchange(t *testing.T) {
	sock := peer(t, greeting, func(req string) []string {
		switch req {
		case `{"execute":"ok"}`:
			return []string{`{"event":"STOP"}`, `{"return":{"a":1}}`}
		case `{"execute":"late"}`:
			return []string{`{"return":{},"id":"old"}`, `{"event":"RESUME"}`, `{"return":{"b":2},"id":"new"}`}
		case `{"execute":"fail"}`:
			return []string{`{"error":{"class":"GenericError","desc":"no"}}`}
		}
		return []string{`not json`}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := c.Exchange(ctx, map[string]string{"execute": "ok"}, nil)
	if err != nil || string(m.Return) != `{"a":1}` || m.Err() != nil {
		t.Fatalf("ok: %+v %v", m, err)
	}
	m, err = c.Exchange(ctx, map[string]string{"execute": "late"}, func(m *Message) (bool, error) {
		return string(m.ID) == `"new"`, nil
	})
	if err != nil || string(m.Return) != `{"b":2}` {
		t.Fatalf("late reply not skipped: %+v %v", m, err)
	}
	m, err = c.Exchange(ctx, map[string]string{"execute": "fail"}, nil)
	if err != nil || m.Err() == nil || !errors.Is(m.Err(), errdefs.ErrUnknown) || !strings.Contains(m.Err().Error(), "GenericError: no") {
		t.Fatalf("error reply: %+v %v", m, err)
	}
	if got := c.Events(); !slices.Equal(got, []string{"STOP", "RESUME"}) {
		t.Errorf("events %v, want [STOP RESUME]", got)
	}
	if _, err := c.Exchange(ctx, map[string]string{"execute": "garbage"}, nil); err == nil || !strings.Contains(err.Error(), "bad reply") {
		t.Errorf("garbage reply: %v", err)
	}
	c.Close()
	if _, err := c.Exchange(ctx, map[string]string{"execute": "ok"}, nil); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("exchange after Close: %v, want Unavailable", err)
	}
}

func TestDialBadGreeting(t *testing.T) {
	sock := peer(t, `{"hello":1}`, func(string) []string { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Dial(ctx, sock); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), `"{\"hello\":1}\n"`) {
		t.Fatalf("bad greeting: %v, want Unavailable quoting what came", err)
	}
}
