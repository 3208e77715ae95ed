package procfs

import (
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func TestRSSBytes(t *testing.T) {
	before, err := RSSBytes(0)
	if err != nil || before == 0 {
		t.Fatalf("own RSS = %d, %v", before, err)
	}
	// Touch 64 MiB of fresh pages: the resident set must grow by about
	// that much. A mapping of its own, not the Go heap, which may hand out
	// pages already resident (freed by an earlier test, or by this one
	// under -count) and then RSS does not grow.
	buf, err := unix.Mmap(-1, 0, 64<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	for i := 0; i < len(buf); i += os.Getpagesize() {
		buf[i] = 1
	}
	after, err := RSSBytes(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after < before+48<<20 {
		t.Errorf("RSS went from %d to %d after touching 64 MiB", before, after)
	}
	// pid 2 is kthreadd: no VmRSS line.
	if _, err := RSSBytes(2); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("kernel thread: err = %v, want NotFound", err)
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Mem
		wantErr error
	}{
		{name: "vmm with shared guest RAM",
			in:   "Name:\tqemu\nVmRSS:\t  300 kB\nRssAnon:\t   40 kB\nRssFile:\t   10 kB\nRssShmem:\t  250 kB\nVmSwap:\t0 kB\n",
			want: Mem{RSS: 300 << 10, Anon: 40 << 10, File: 10 << 10, Shmem: 250 << 10}},
		{name: "old kernel without the split", in: "VmRSS:\t 8 kB\n", want: Mem{RSS: 8 << 10}},
		{name: "kernel thread", in: "Name:\tkthreadd\nThreads:\t1\n", wantErr: errdefs.ErrNotFound},
		{name: "garbage value", in: "VmRSS:\tlots kB\n", wantErr: strconv.ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatus(tt.in, "1")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v %v, want %+v", got, err, tt.want)
			}
		})
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name         string
		in           string
		user, system time.Duration
		wantErr      bool
	}{
		{name: "plain", in: "42 (qemu-system-x86) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 0 0\n",
			user: 2500 * time.Millisecond, system: 750 * time.Millisecond},
		{name: "command with spaces and parentheses", in: "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 0\n",
			user: 10 * time.Millisecond, system: 20 * time.Millisecond},
		{name: "truncated", in: "7 (x) R 1 2 3\n", wantErr: true},
		{name: "no command", in: "7 x R\n", wantErr: true},
		{name: "bad utime", in: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 u 2 0\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, s, err := parseStat(tt.in, "7")
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error for %q", tt.in)
				}
				return
			}
			if err != nil || u != tt.user || s != tt.system {
				t.Fatalf("got %v %v %v, want %v %v", u, s, err, tt.user, tt.system)
			}
		})
	}
}

// TestLiveFigures reads this process: its memory split adds up to its
// resident set, and CPU spent spinning shows up as user time.
func TestLiveFigures(t *testing.T) {
	m, err := Memory(0)
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS == 0 || m.Anon == 0 || m.File == 0 || m.Anon+m.File+m.Shmem != m.RSS {
		t.Fatalf("memory %+v: want anon + file + shmem = rss, anon and file non-zero", m)
	}
	u0, _, err := CPUTimes(0)
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the kernel's 10 ms tick counted at least 30 ms more user
	// time: a deadline per probe, not a sleep, so load only slows it.
	deadline := time.Now().Add(time.Minute)
	x := 0
	for {
		for i := 0; i < 1e6; i++ {
			x += i
		}
		u, _, err := CPUTimes(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if u-u0 >= 30*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("user time %v → %v after a minute of spinning", u0, u)
		}
	}
	_ = x
}
