package service

import (
	"bytes"
	"context"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/task/agent/internal/guestinit"
)

// TestSetupSandboxEntropy: the host's bytes reach the pool hook whole,
// more than MaxEntropy are refused before anything else changes, and an
// empty field leaves the pool alone.
func TestSetupSandboxEntropy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entropy []byte
		want    []byte
		invalid bool
	}{
		{name: "none"},
		{name: "64 bytes", entropy: bytes.Repeat([]byte{7}, 64), want: bytes.Repeat([]byte{7}, 64)},
		{name: "limit", entropy: make([]byte, MaxEntropy), want: make([]byte, MaxEntropy)},
		{name: "too many", entropy: make([]byte, MaxEntropy+1), invalid: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []byte
			calls, hostCalls := 0, 0
			a := NewAgentService(New(guestinit.GlobalReaper(context.Background())),
				WithEntropyHook(func(b []byte) error { calls++; got = append([]byte(nil), b...); return nil }),
				WithSystemHooks(func(string) error { hostCalls++; return nil }, nil, nil),
				WithPodFilesDir(t.TempDir()))
			_, err := a.SetupSandbox(context.Background(), &agentapi.SetupSandboxRequest{Entropy: tc.entropy, Hostname: "h"})
			if tc.invalid {
				if !isKind(err, errdefs.ErrInvalidArgument) || calls != 0 || hostCalls != 0 {
					t.Fatalf("err %v (invalid argument wanted), pool calls %d, hostname calls %d", err, calls, hostCalls)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if wantCalls := min(len(tc.want), 1); calls != wantCalls || !bytes.Equal(got, tc.want) {
				t.Fatalf("pool hook called %d times with %d bytes, want %d call(s) with %d", calls, len(got), wantCalls, len(tc.want))
			}
		})
	}
}
