package vmbackend

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/kuasar-go/kuasar/task/agent/agentapi"
)

// pumps copy one process's stdio between the host and the agent's stream
// RPCs: ReadStdout/ReadStderr until the agent reports the stream closed,
// and stdin into WriteStdin, then CloseStdin on EOF.
type pumps struct {
	ctx     context.Context
	cancel  context.CancelFunc
	out     sync.WaitGroup
	done    chan struct{}
	closers []io.Closer
	once    sync.Once
}

const readChunk = 32 << 10

// start runs the pumps; when own is set the host ends are closed as their
// streams end (FIFOs), otherwise they are the caller's to close.
func (p *pumps) start(ag agentapi.AgentService, cid, eid string, stdin io.Reader, stdout, stderr io.Writer, own bool) *pumps {
	p.ctx, p.cancel = context.WithCancel(context.Background())
	read := func(w io.Writer, fn func(context.Context, *agentapi.ReadStreamRequest) (*agentapi.ReadStreamResponse, error)) {
		defer p.out.Done()
		if c, ok := w.(io.Closer); ok && own {
			defer c.Close()
		}
		for {
			resp, err := fn(p.ctx, &agentapi.ReadStreamRequest{ContainerId: cid, ExecId: eid, Len: readChunk})
			if err != nil {
				// OutOfRange (EOF), NotFound, or the channel is gone.
				return
			}
			if len(resp.GetData()) == 0 {
				return
			}
			if _, err := w.Write(resp.GetData()); err != nil {
				return
			}
		}
	}
	if stdout != nil {
		p.out.Add(1)
		go read(stdout, ag.ReadStdout)
	}
	if stderr != nil {
		p.out.Add(1)
		go read(stderr, ag.ReadStderr)
	}
	go func() {
		p.out.Wait()
		close(p.done)
	}()
	if stdin != nil {
		go func() {
			buf := make([]byte, readChunk)
			for {
				n, err := stdin.Read(buf)
				if n > 0 {
					if _, werr := ag.WriteStdin(p.ctx, &agentapi.WriteStreamRequest{ContainerId: cid, ExecId: eid, Data: buf[:n]}); werr != nil {
						return
					}
				}
				if err != nil {
					if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
						_, _ = ag.CloseStdin(p.ctx, &agentapi.CloseStdinRequest{ContainerId: cid, ExecId: eid})
					}
					return
				}
			}
		}()
	}
	return p
}

// wait waits up to d for the output streams to reach EOF.
func (p *pumps) wait(d time.Duration) {
	select {
	case <-p.done:
	case <-time.After(d):
	}
}

// stop cancels the pumps and closes the host ends.
func (p *pumps) stop() {
	p.once.Do(func() {
		if p.cancel != nil {
			p.cancel()
		}
		for _, c := range p.closers {
			c.Close()
		}
	})
}
