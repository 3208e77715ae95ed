package stdio_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/task/stdio"
)

// TestDrain checks that Drain reports output still in a FIFO (the reader has
// not taken it: containerd would lose it if the exit were published now) and
// returns at once when every byte was read, nothing was written, or the
// output is a file.
func TestDrain(t *testing.T) {
	for _, tc := range []struct {
		name     string
		file     bool // stdout is a file:// log instead of a FIFO
		write    string
		readBack int // bytes the reader takes before Drain
		unread   int // bytes Drain must report, 0 for success
	}{
		{name: "nothing written"},
		{name: "all read", write: "hello from wasm\n", readBack: 16},
		{name: "none read", write: "hello from wasm\n", unread: 16},
		{name: "partly read", write: "hello from wasm\n", readBack: 6, unread: 10},
		{name: "file output", file: true, write: "hello from wasm\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, out, _ := peer(t)
			if tc.file {
				cfg.Stdout = "file://" + filepath.Join(t.TempDir(), "out.log")
			}
			p, err := stdio.Open(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if _, err := io.WriteString(p.Stdout, tc.write); err != nil {
				t.Fatal(err)
			}
			if tc.readBack > 0 {
				if _, err := io.ReadFull(out, make([]byte, tc.readBack)); err != nil {
					t.Fatal(err)
				}
			}
			// Nothing reads during Drain: the unread bytes stay.
			err = p.Drain(20 * time.Millisecond)
			if tc.unread == 0 {
				if err != nil {
					t.Fatalf("Drain: %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), fmt.Sprintf("%d bytes", tc.unread)) || !strings.Contains(err.Error(), cfg.Stdout) {
				t.Fatalf("Drain: %v, want a deadline error naming %d bytes and %s", err, tc.unread, cfg.Stdout)
			}
		})
	}
}

// TestDrainWaitsForReader checks that Drain returns once a reader that
// starts late has taken the output, before its deadline.
func TestDrainWaitsForReader(t *testing.T) {
	cfg, _, out, _ := peer(t)
	p, err := stdio.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const msg = "hello from wasm\n"
	if _, err := io.WriteString(p.Stdout, msg); err != nil {
		t.Fatal(err)
	}
	drained := make(chan error, 1)
	go func() { drained <- p.Drain(time.Minute) }()
	if _, err := io.ReadFull(out, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain after the reader took everything: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Drain did not return 30 s after the reader took everything")
	}
}
