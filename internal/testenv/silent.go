package testenv

import (
	"net"
	"sync"
	"testing"
)

// SilentListener listens on a loopback TCP port, accepts every connection
// and never answers: the peer that hangs a client without timeouts (a
// registry that accepts and never replies). It returns the host:port; the
// listener and every accepted connection are closed at the end of the test.
func SilentListener(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}
