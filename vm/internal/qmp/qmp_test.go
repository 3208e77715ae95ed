package qmp

import (
	"bufio"
	"context"
	"encoding/json"
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
	c, err := Dial(ctx, "QMP", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ret, err := c.Execute(ctx, Command("ok", "", nil), nil)
	if err != nil || string(ret) != `{"a":1}` {
		t.Fatalf("ok: %s %v", ret, err)
	}
	ret, err = c.Execute(ctx, Command("late", "", nil), func(m *Message) (bool, error) {
		return string(m.ID) == `"new"`, nil
	})
	if err != nil || string(ret) != `{"b":2}` {
		t.Fatalf("late reply not skipped: %s %v", ret, err)
	}
	_, err = c.Execute(ctx, Command("fail", "", nil), nil)
	var qe *Error
	if !errors.Is(err, errdefs.ErrUnknown) || !errors.As(err, &qe) || qe.Class != "GenericError" || qe.Desc != "no" ||
		!strings.Contains(err.Error(), "GenericError: no") {
		t.Fatalf("error reply: %v, want an Unknown *Error naming class and description", err)
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

func TestCommand(t *testing.T) {
	got, _ := json.Marshal(Command("quit", "kuasar-1", nil))
	if string(got) != `{"execute":"quit","id":"kuasar-1"}` {
		t.Errorf("command %s", got)
	}
	got, _ = json.Marshal(Command("x", "", map[string]int{"a": 1}))
	if string(got) != `{"arguments":{"a":1},"execute":"x"}` {
		t.Errorf("command %s", got)
	}
}

func TestDialBadGreeting(t *testing.T) {
	sock := peer(t, `{"hello":1}`, func(string) []string { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Dial(ctx, "QMP", sock); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), `"{\"hello\":1}\n"`) {
		t.Fatalf("bad greeting: %v, want Unavailable quoting what came", err)
	}
}
