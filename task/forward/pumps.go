package forward

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/task/stdio"
)

// streams are the host ends of a process's standard streams; a nil field
// means the process has no such stream.
type streams struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// pumps copy one process's stdio between the host and the agent's stream
// RPCs: ReadStdout/ReadStderr until the agent reports the stream closed,
// and stdin into WriteStdin, then CloseStdin at its end of file.
type pumps struct {
	ctx    context.Context
	cancel context.CancelFunc
	out    sync.WaitGroup
	done   chan struct{} // closed when both output streams ended
	pipes  *stdio.Pipes  // the host ends when the forwarder opened them
	once   sync.Once
}

// readChunk is the most one ReadStdout/ReadStderr asks for.
const readChunk = 32 << 10

// pumpTimeout bounds how long Wait and the exit event wait for the output
// pumps to deliver what the process wrote before it exited.
const pumpTimeout = 5 * time.Second

// startPumps runs the pumps of process (cid, eid) between s and the agent.
// With pipes (the host ends the forwarder opened) the outputs are closed
// once both output streams ended, so their readers see end of file.
func startPumps(ag agentapi.AgentService, cid, eid string, s streams, pipes *stdio.Pipes) *pumps {
	p := &pumps{done: make(chan struct{}), pipes: pipes}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	read := func(w io.Writer, fn func(context.Context, *agentapi.ReadStreamRequest) (*agentapi.ReadStreamResponse, error)) {
		defer p.out.Done()
		for {
			resp, err := fn(p.ctx, &agentapi.ReadStreamRequest{ContainerId: cid, ExecId: eid, Len: readChunk})
			if err != nil || len(resp.GetData()) == 0 {
				// OutOfRange (end of file), NotFound, or the channel is gone.
				return
			}
			if _, err := w.Write(resp.GetData()); err != nil {
				return
			}
		}
	}
	if s.Stdout != nil {
		p.out.Add(1)
		go read(s.Stdout, ag.ReadStdout)
	}
	if s.Stderr != nil {
		p.out.Add(1)
		go read(s.Stderr, ag.ReadStderr)
	}
	go func() {
		p.out.Wait()
		_ = pipes.CloseOutputs()
		close(p.done)
	}()
	if s.Stdin != nil {
		go p.pumpStdin(ag, cid, eid, s.Stdin)
	}
	return p
}

func (p *pumps) pumpStdin(ag agentapi.AgentService, cid, eid string, in io.Reader) {
	buf := make([]byte, readChunk)
	for {
		n, err := in.Read(buf)
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
}

// wait waits up to d for the output streams to reach end of file.
func (p *pumps) wait(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
	}
}

// stop cancels the pumps and closes the host ends the forwarder opened.
func (p *pumps) stop() {
	p.once.Do(func() {
		p.cancel()
		_ = p.pipes.Close()
	})
}

// noPumps stands for the stdio of a process whose Task API server opens its
// stdio itself (DirectIO): nothing to drain, nothing to stop.
func noPumps() *pumps {
	p := &pumps{done: make(chan struct{}), cancel: func() {}}
	close(p.done)
	return p
}
