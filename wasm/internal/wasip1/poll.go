package wasip1

import (
	"context"
	"encoding/binary"
	"time"

	"github.com/tetratelabs/wazero/api"
	"golang.org/x/sys/unix"
)

// event is one event poll_oneoff reports.
type event struct {
	userdata uint64
	errno    Errno
	typ      uint8
	nbytes   uint64
	flags    uint16
}

// pollOneoff waits until a subscription fires: a clock reached its
// timeout, or an fd is ready. Regular files (and directories' peers, the
// files this host serves) are always ready, with the bytes left to read;
// stdout and stderr are ready to write; stdin is ready once its reader
// brought data or reached its end, whatever it reads from. A subscription
// that cannot be served (bad fd, missing poll right, unknown clock) fires
// at once with its error. The wait ends early, with EINTR, when the run is
// stopped.
func pollOneoff(in *Instance, ctx context.Context, mod api.Module, s []uint64) Errno {
	return in.pollOneoff(ctx, mod, s, subscriptionLayout{size: sizeSubscription, clock: 16})
}

// pollOneoffUnstable is poll_oneoff of snapshot 0, whose clock
// subscriptions start with an extra u64 (56-byte subscriptions).
func pollOneoffUnstable(in *Instance, ctx context.Context, mod api.Module, s []uint64) Errno {
	return in.pollOneoff(ctx, mod, s, subscriptionLayout{size: sizeSubscriptionUnstable, clock: 24})
}

// subscriptionLayout is where a subscription's fields are.
// minReleasedWait is the shortest poll_oneoff wait during which the guest
// lets go of its OS thread (Config.Blocking).
const minReleasedWait = time.Millisecond

type subscriptionLayout struct {
	size  uint32 // bytes per subscription
	clock uint32 // offset of the clock id; timeout, precision, flags follow
}

func (in *Instance) pollOneoff(ctx context.Context, mod api.Module, s []uint64, lay subscriptionLayout) Errno {
	subPtr, outPtr, nsubs := uint32(s[0]), uint32(s[1]), uint32(s[2])
	if nsubs == 0 {
		return ErrnoInval
	}
	if uint64(nsubs)*uint64(lay.size) > 1<<32-1 {
		return ErrnoFault // cannot be in a 32-bit memory
	}
	subs, errno := read(mod, subPtr, nsubs*lay.size)
	if errno != 0 {
		return errno
	}
	out, errno := read(mod, outPtr, nsubs*sizeEvent)
	if errno != 0 {
		return errno
	}
	le := binary.LittleEndian
	var (
		ready   []event
		clocks  []event // waiting, with nbytes holding the timeout in ns
		waitIn  []event // waiting for stdin
		stdin   *stdinReader
		timeout = int64(-1)
	)
	for i := uint32(0); i < nsubs; i++ {
		sub := subs[i*lay.size : (i+1)*lay.size]
		ev := event{userdata: le.Uint64(sub), typ: sub[8]}
		switch ev.typ {
		case eventClock:
			c := sub[lay.clock:]
			id, t, flags := le.Uint32(c), le.Uint64(c[8:]), le.Uint16(c[24:])
			if flags&^subclockAbstime != 0 {
				ev.errno = ErrnoInval
				break
			}
			if flags&subclockAbstime != 0 {
				n, errno := now(id)
				if errno != 0 {
					ev.errno = errno
					break
				}
				if t > n {
					t -= n
				} else {
					t = 0
				}
			} else if _, ok := hostClock(id); !ok {
				ev.errno = ErrnoInval
				break
			}
			if t == 0 {
				break
			}
			if t > maxInt64 {
				t = maxInt64
			}
			ev.nbytes = t
			clocks = append(clocks, ev)
			if timeout < 0 || int64(t) < timeout {
				timeout = int64(t)
			}
			continue
		case eventFdRead, eventFdWrite:
			e, errno := in.get(le.Uint32(sub[16:]))
			switch {
			case errno != 0:
				ev.errno = errno
			case e.base&RightPollFdReadwrite == 0:
				ev.errno = ErrnoNotcapable
			case e.kind == kindDir:
				ev.errno = ErrnoBadf
			case e.kind == kindStdin && ev.typ == eventFdRead:
				ok, n, hup := e.in.peek()
				if !ok {
					stdin = e.in
					waitIn = append(waitIn, ev)
					continue
				}
				ev.nbytes = n
				if hup {
					ev.flags = eventrwHangup
				}
			case e.kind == kindStdin || (e.kind == kindStdout && ev.typ == eventFdRead):
				ev.errno = ErrnoBadf
			case e.kind == kindFile && ev.typ == eventFdRead:
				ev.nbytes = fileLeft(e.hostFd)
			}
		default:
			ev.errno = ErrnoInval
		}
		ready = append(ready, ev)
	}
	if len(ready) == 0 {
		// The guest idles until a subscription fires: its goroutine
		// parks, and the caller lets go of what it holds for a running
		// guest (Config.Blocking: the task service's locked OS thread).
		// Not for a wait shorter than minReleasedWait: a guest looping
		// on tiny sleeps would spend its CPU outside the locked thread,
		// where the task's CPU time does not count it.
		if in.stdin.blocking != nil && (timeout < 0 || timeout >= int64(minReleasedWait)) {
			defer in.stdin.blocking()()
		}
		start := time.Now()
		var timer <-chan time.Time
		if timeout >= 0 {
			t := time.NewTimer(time.Duration(timeout))
			defer t.Stop()
			timer = t.C
		}
		var inCh chan readResult
		if stdin != nil {
			inCh = stdin.start(stdinPollRead)
		}
		select {
		case res := <-inCh:
			stdin.finish(res)
			for _, ev := range waitIn {
				ev.nbytes, ev.flags = stdinState(stdin)
				ready = append(ready, ev)
			}
		case <-timer:
		case <-ctx.Done():
			return ErrnoIntr
		}
		elapsed := uint64(time.Since(start))
		for _, ev := range clocks {
			if ev.nbytes <= elapsed {
				ev.nbytes = 0
				ready = append(ready, ev)
			}
		}
	}
	for i, ev := range ready {
		b := out[i*sizeEvent : (i+1)*sizeEvent]
		clear(b)
		le.PutUint64(b, ev.userdata)
		le.PutUint16(b[8:], uint16(ev.errno))
		b[10] = ev.typ
		le.PutUint64(b[16:], ev.nbytes)
		le.PutUint16(b[24:], ev.flags)
	}
	return putU32(mod, uint32(s[3]), uint32(len(ready)))
}

// stdinState is the readiness of stdin: the bytes buffered, or a hangup
// at its end.
func stdinState(s *stdinReader) (uint64, uint16) {
	if len(s.buf) == 0 && s.err != nil {
		return 0, eventrwHangup
	}
	return uint64(len(s.buf)), 0
}

// fileLeft is the number of bytes between fd's offset and its end.
func fileLeft(fd int) uint64 {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return 0
	}
	pos, err := unix.Seek(fd, 0, unix.SEEK_CUR)
	if err != nil || pos >= st.Size {
		return 0
	}
	return uint64(st.Size - pos)
}
