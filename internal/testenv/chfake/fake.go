package chfake

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kuasar-go/kuasar/task/agent/agentapi"
)

// Env is the environment variable that makes the test binary serve as
// the fake Cloud Hypervisor (and virtiofsd) instead of testing: the
// package's TestMain calls Main. testenv.FakeVMMSpec(t, Env, dir) sets
// it and names the test binary as the VMM.
const Env = "KUASAR_FAKE_CH"

// RecordEnv names the file a fake VMM writes its Record to at
// vmm.shutdown; by default RecordName beside its API socket (in its
// VM's state directory).
const RecordEnv = "KUASAR_FAKE_CH_RECORD"

// DieAtEnv names an endpoint (e.g. "/vm.restore") at which a fake VMM
// process kills itself with SIGKILL, as a VMM killed half-way does.
const DieAtEnv = "KUASAR_FAKE_CH_DIE_AT"

// JournalEnv names a file every fake VMM process appends its Record to
// (one JSON line, Pid set) at vmm.shutdown, besides its record file:
// for tests that need the records of VMMs whose directories are gone
// (a template build's).
const JournalEnv = "KUASAR_FAKE_CH_JOURNAL"

// RecordName is the default record file of a fake VMM.
const RecordName = "fake-record.json"

// Version is what the fake answers to --version.
const Version = "cloud-hypervisor v53.0-fake"

// MemoryMarker is what the fake writes at the start of a snapshot's
// memory-ranges file, and checks a restore reads back.
const MemoryMarker = "guest memory of the template"

// Fake is an in-process Cloud Hypervisor API server (an http.Handler for
// a unix socket). It validates every request body against the OpenAPI
// description, keeps the VM state machine (created → running ⇄ paused
// → shutdown), answers like the real VMM, and serves the hybrid vsock
// socket the VM's config names, with a fake guest agent on port 1024.
type Fake struct {
	api *OpenAPI

	mu       sync.Mutex
	log      []string // "PUT /vm.create"
	bodies   map[string]map[string]any
	problems []string
	agent    []AgentCall
	state    string
	vsock    net.Listener
	shutdown chan struct{}
	process  bool // serving as a VMM process (Serve), not in a test
}

// AgentCall is one call the fake guest agent served.
type AgentCall struct {
	Method string
	// For SetupSandbox: what the host sent.
	Hostname      string   `json:",omitempty"`
	ClockUnixNano int64    `json:",omitempty"`
	EntropyBytes  int      `json:",omitempty"`
	Mounts        []string `json:",omitempty"`
}

// Record is what a fake VMM process saw, written at vmm.shutdown.
type Record struct {
	Pid      int `json:",omitempty"`
	Log      []string
	Problems []string
	Bodies   map[string]map[string]any
	Agent    []AgentCall
}

// New returns a fake VMM checking requests against api.
func New(api *OpenAPI) *Fake {
	return &Fake{api: api, bodies: map[string]map[string]any{}, shutdown: make(chan struct{})}
}

// Problems lists the requests that violated the OpenAPI description.
func (f *Fake) Problems() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.problems...)
}

// Body is the last body sent to endpoint (e.g. "/vm.create").
func (f *Fake) Body(endpoint string) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[endpoint]
}

func (f *Fake) problem(format string, a ...any) {
	f.problems = append(f.problems, fmt.Sprintf(format, a...))
}

// move takes the VM from state from to state to, as a call that needs
// from does; in any other state it answers code with msg, as the VMM
// does, and reports false.
func (f *Fake) move(w http.ResponseWriter, from, to string, code int, msg string) bool {
	if f.state != from {
		http.Error(w, msg, code)
		return false
	}
	f.state = to
	return true
}

// ServeHTTP serves one API request.
func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ep := strings.TrimPrefix(r.URL.Path, "/api/v1")
	f.log = append(f.log, r.Method+" "+ep)
	if f.process && os.Getenv(DieAtEnv) == ep {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	ops, ok := f.api.Paths[ep]
	if !ok {
		f.problem("%s %s: no such endpoint in the OpenAPI description", r.Method, ep)
		http.Error(w, "unknown endpoint", http.StatusNotFound)
		return
	}
	op, ok := ops[strings.ToLower(r.Method)]
	if !ok {
		f.problem("%s %s: method not in the OpenAPI description", r.Method, ep)
		http.Error(w, "bad method", http.StatusMethodNotAllowed)
		return
	}
	body, _ := io.ReadAll(r.Body)
	if op.RequestBody != nil {
		sch := op.RequestBody.Content["application/json"].Schema
		if len(body) == 0 && op.RequestBody.Required {
			f.problem("%s %s: required request body missing", r.Method, ep)
		}
		if r.Header.Get("Content-Type") != "application/json" {
			f.problem("%s %s: Content-Type %q", r.Method, ep, r.Header.Get("Content-Type"))
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			f.problem("%s %s: body is not JSON: %v", r.Method, ep, err)
		} else {
			for _, e := range f.api.validate("body", v, sch) {
				f.problem("%s %s: %s", r.Method, ep, e)
			}
			if m, ok := v.(map[string]any); ok {
				f.bodies[ep] = m
			}
		}
		if len(f.problems) > 0 {
			http.Error(w, strings.Join(f.problems, "; "), http.StatusBadRequest)
			return
		}
	} else if len(body) > 0 {
		f.problem("%s %s: unexpected body %q", r.Method, ep, body)
	}
	reply := func(code int, v any) {
		if v == nil {
			w.WriteHeader(code)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	switch ep {
	case "/vmm.ping":
		reply(200, map[string]any{"version": "fake-ch", "pid": os.Getpid()})
	case "/vm.create":
		if !f.move(w, "", "Created", 400, "VM already created") {
			return
		}
		if vs, ok := f.bodies[ep]["vsock"].(map[string]any); ok {
			f.listenVsock(vs["socket"].(string))
		}
		reply(204, nil)
	case "/vm.boot":
		if f.move(w, "Created", "Running", 404, "VM not created") {
			// The guest's agent says it serves, as the real one does.
			f.console("kuasar-task fake: serving on vsock port 1024")
			reply(204, nil)
		}
	case "/vm.info":
		if f.state == "" {
			http.Error(w, "not created", 404)
			return
		}
		reply(200, map[string]any{"config": f.bodies["/vm.create"], "state": f.state})
	case "/vm.shutdown":
		if f.state == "Paused" {
			f.state = "Running" // a paused VM shuts down as well
		}
		if f.move(w, "Running", "Shutdown", 405, "not running") {
			reply(204, nil)
		}
	case "/vm.pause":
		if f.move(w, "Running", "Paused", 405, "VM not running") {
			reply(204, nil)
		}
	case "/vm.resume":
		if f.move(w, "Paused", "Running", 405, "VM not paused") {
			reply(204, nil)
		}
	case "/vm.snapshot":
		// The VMM refuses to snapshot a running VM: pause it first.
		if f.state != "Paused" {
			http.Error(w, "VM not paused", 405)
			return
		}
		if err := f.snapshot(f.bodies[ep]["destination_url"].(string)); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		reply(204, nil)
	case "/vm.restore":
		if f.state != "" {
			http.Error(w, "VM already created", 404)
			return
		}
		if err := f.restore(f.bodies[ep]); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		reply(204, nil)
	case "/vm.delete":
		f.state = ""
		reply(204, nil)
	case "/vmm.shutdown":
		reply(204, nil)
		select {
		case <-f.shutdown:
		default:
			close(f.shutdown)
		}
	case "/vm.add-disk", "/vm.add-fs", "/vm.add-net", "/vm.add-vsock":
		if f.state == "" {
			http.Error(w, "not created", 404)
			return
		}
		reply(200, map[string]any{"id": "dev0", "bdf": "0000:00:06.0"})
	default:
		reply(204, nil)
	}
}

// console appends line to the serial console file the VM's config names.
func (f *Fake) console(line string) {
	sc, _ := f.bodies["/vm.create"]["serial"].(map[string]any)
	if p, ok := sc["file"].(string); ok {
		if lf, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
			fmt.Fprintln(lf, line)
			lf.Close()
		} else {
			f.problem("serial console file %s: %v", p, err)
		}
	}
}

// memorySize is the guest memory size the VM's config names.
func (f *Fake) memorySize() int64 {
	m, _ := f.bodies["/vm.create"]["memory"].(map[string]any)
	switch n := m["size"].(type) {
	case json.Number:
		v, _ := n.Int64()
		return v
	case float64:
		return int64(n)
	}
	return 0
}

// snapshot writes what Cloud Hypervisor's snapshot holds into the
// directory of a file:// URL: config.json (the VM's config), state.json
// and memory-ranges, created new (its memory_manager.rs opens it
// create_new), sized to the guest memory and sparse, MemoryMarker at
// its start.
func (f *Fake) snapshot(url string) error {
	dir, ok := strings.CutPrefix(url, "file://")
	if !ok {
		return fmt.Errorf("destination_url %q: want file://", url)
	}
	cfg, _ := json.Marshal(f.bodies["/vm.create"])
	for name, b := range map[string][]byte{"config.json": cfg, "state.json": []byte(`{"fake":"device state"}`)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	mf, err := os.OpenFile(filepath.Join(dir, "memory-ranges"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer mf.Close()
	if err := mf.Truncate(f.memorySize()); err != nil {
		return err
	}
	_, err = mf.WriteAt([]byte(MemoryMarker), 0)
	return err
}

// restore loads a snapshot as Cloud Hypervisor does: the config from
// config.json (every device recreated at the paths it names: the vsock
// socket listened on, the serial console file), the device state from
// state.json (refused when not JSON), the memory from memory-ranges
// (opened read-only and read: refused unless it is the guest memory's
// size and starts with MemoryMarker); the VM is then paused, or running
// with resume.
func (f *Fake) restore(body map[string]any) error {
	dir, ok := strings.CutPrefix(body["source_url"].(string), "file://")
	if !ok {
		return fmt.Errorf("source_url %q: want file://", body["source_url"])
	}
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return err
	}
	var cfg map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("config.json: %w", err)
	}
	st, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil || !json.Valid(st) {
		return fmt.Errorf("state.json unusable (%v)", err)
	}
	f.bodies["/vm.create"] = cfg
	mf, err := os.Open(filepath.Join(dir, "memory-ranges"))
	if err != nil {
		return fmt.Errorf("memory-ranges: %w", err)
	}
	head := make([]byte, len(MemoryMarker))
	_, rerr := mf.ReadAt(head, 0)
	fi, _ := mf.Stat()
	mf.Close()
	if rerr != nil || string(head) != MemoryMarker || fi.Size() != f.memorySize() {
		return fmt.Errorf("memory-ranges is not the snapshot's memory (%d bytes, want %d; starts %q; %v)", fi.Size(), f.memorySize(), head, rerr)
	}
	if vs, ok := cfg["vsock"].(map[string]any); ok {
		f.listenVsock(vs["socket"].(string))
	}
	f.console(fmt.Sprintf("restored by pid %d", os.Getpid()))
	// vhost-user-fs: connect to the virtiofsd socket the config names.
	if fs, ok := cfg["fs"].([]any); ok && len(fs) > 0 {
		sock := fs[0].(map[string]any)["socket"].(string)
		c, err := net.Dial("unix", sock)
		if err != nil {
			return fmt.Errorf("virtio-fs backend %s: %w", sock, err)
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		f.console("virtio-fs: " + strings.TrimSpace(line))
	}
	f.state = "Paused"
	if body["resume"] == true {
		f.state = "Running"
	}
	return nil
}

// listenVsock serves Cloud Hypervisor's hybrid vsock protocol: "CONNECT
// <port>\n" → "OK <hostport>\n", then the fake guest agent (ttrpc) for
// port 1024; other ports are refused by closing the connection.
func (f *Fake) listenVsock(path string) {
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		f.problem("vsock listen %s: %v", path, err)
		return
	}
	f.vsock = l
	srv, err := ttrpc.NewServer()
	if err != nil {
		f.problem("ttrpc server: %v", err)
		return
	}
	agentapi.RegisterAgentService(srv, &fakeAgent{f: f})
	conns := &connListener{c: make(chan net.Conn), done: make(chan struct{}), addr: l.Addr()}
	go srv.Serve(context.Background(), conns)
	go func() {
		defer conns.Close()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				rd := bufio.NewReader(c)
				line, err := rd.ReadString('\n')
				if err != nil || line != "CONNECT 1024\n" {
					c.Close()
					return
				}
				fmt.Fprintf(c, "OK 1073741824\n")
				select {
				case conns.c <- &bufConn{Conn: c, r: rd}:
				case <-conns.done:
					c.Close()
				}
			}()
		}
	}()
}

// Close stops serving the hybrid vsock socket.
func (f *Fake) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.vsock != nil {
		f.vsock.Close()
	}
}

// fakeAgent is the guest agent behind the fake's hybrid vsock port 1024:
// Ping names the fake VMM's pid as the guest kernel release (so a test
// tells whose guest answered), SetupSandbox is recorded.
type fakeAgent struct{ f *Fake }

// KernelRelease is what the fake agent of the VMM with pid answers to Ping.
func KernelRelease(pid int) string { return fmt.Sprintf("fake-ch-%d", pid) }

func (a *fakeAgent) call(c AgentCall) {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	a.f.agent = append(a.f.agent, c)
}

func (a *fakeAgent) Ping(context.Context, *agentapi.PingRequest) (*agentapi.PingResponse, error) {
	a.call(AgentCall{Method: "Ping"})
	return &agentapi.PingResponse{KernelRelease: KernelRelease(os.Getpid()), AgentVersion: "fake"}, nil
}

func (a *fakeAgent) SetupSandbox(_ context.Context, r *agentapi.SetupSandboxRequest) (*emptypb.Empty, error) {
	c := AgentCall{Method: "SetupSandbox", Hostname: r.GetHostname(), ClockUnixNano: r.GetClockUnixNano(), EntropyBytes: len(r.GetEntropy())}
	for _, m := range r.GetMounts() {
		c.Mounts = append(c.Mounts, m.GetFstype()+":"+m.GetSource()+":"+m.GetTarget())
	}
	a.call(c)
	return &emptypb.Empty{}, nil
}

func (a *fakeAgent) ReadStdout(context.Context, *agentapi.ReadStreamRequest) (*agentapi.ReadStreamResponse, error) {
	return nil, fmt.Errorf("fake agent: no containers")
}

func (a *fakeAgent) ReadStderr(context.Context, *agentapi.ReadStreamRequest) (*agentapi.ReadStreamResponse, error) {
	return nil, fmt.Errorf("fake agent: no containers")
}

func (a *fakeAgent) WriteStdin(context.Context, *agentapi.WriteStreamRequest) (*agentapi.WriteStreamResponse, error) {
	return nil, fmt.Errorf("fake agent: no containers")
}

func (a *fakeAgent) CloseStdin(context.Context, *agentapi.CloseStdinRequest) (*emptypb.Empty, error) {
	return nil, fmt.Errorf("fake agent: no containers")
}

// bufConn is a connection whose first bytes were read into r.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connListener hands the ttrpc server the connections whose hybrid
// vsock handshake is done.
type connListener struct {
	c    chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// Main is the TestMain of a package whose tests run the fake as a
// process: with Env set it serves (Serve) and exits, otherwise it runs
// the tests.
func Main(m *testing.M) {
	if os.Getenv(Env) == "1" {
		os.Exit(Serve(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// Serve runs the fake as a process: the test binary re-executed as the
// "cloud-hypervisor" binary with --api-socket path=S (until
// vmm.shutdown, then it writes its Record), or as virtiofsd with
// --socket-path=S.
func Serve(args []string) int {
	for _, a := range args {
		if sock, ok := strings.CutPrefix(a, "--socket-path="); ok {
			return serveVirtioFSD(sock, args)
		}
	}
	if len(args) == 1 && args[0] == "--version" {
		fmt.Println(Version)
		return 0
	}
	var sock, seccomp string
	for i, a := range args {
		if a == "--api-socket" && i+1 < len(args) {
			sock = strings.TrimPrefix(args[i+1], "path=")
		}
		// docs/seccomp.md: --seccomp true (default), false or log.
		if a == "--seccomp" && i+1 < len(args) {
			seccomp = args[i+1]
		}
	}
	if sock == "" {
		fmt.Fprintln(os.Stderr, "fake cloud-hypervisor: no --api-socket path=")
		return 2
	}
	api, err := ReadOpenAPI()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	f := New(api)
	f.process = true
	if seccomp != "true" {
		f.problems = append(f.problems, fmt.Sprintf("command line %q: want --seccomp true (the VMM's seccomp filters on)", args))
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	go http.Serve(l, f)
	<-f.shutdown
	f.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	rec := os.Getenv(RecordEnv)
	if rec == "" { // one record per VMM: beside its API socket
		rec = filepath.Join(filepath.Dir(sock), RecordName)
	}
	b, _ := json.Marshal(Record{Log: f.log, Problems: f.problems, Bodies: f.bodies, Agent: f.agent})
	os.WriteFile(rec, b, 0o600)
	if j := os.Getenv(JournalEnv); j != "" {
		b, _ := json.Marshal(Record{Pid: os.Getpid(), Log: f.log, Problems: f.problems})
		if jf, err := os.OpenFile(j, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
			jf.Write(append(b, '\n'))
			jf.Close()
		}
	}
	return 0
}

// ReadJournal reads the records fake VMMs appended to the journal file
// path (JournalEnv).
func ReadJournal(t testing.TB, path string) []Record {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []Record
	for _, l := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var r Record
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("journal %s: %v", path, err)
		}
		out = append(out, r)
	}
	return out
}

// ReadRecord reads the record a fake VMM wrote to path, failing the test
// when there is none or it saw requests violating the OpenAPI
// description.
func ReadRecord(t testing.TB, path string) Record {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the fake VMM left no record %s (it never got vmm.shutdown): %v", path, err)
	}
	var r Record
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) > 0 {
		t.Errorf("requests violating the OpenAPI description (record %s): %v", path, r.Problems)
	}
	return r
}

// serveVirtioFSD plays virtiofsd (the test binary re-executed with its
// command line): it listens on its --socket-path and tells every client
// which --shared-dir it serves, until killed.
func serveVirtioFSD(sock string, args []string) int {
	var shared string
	for _, a := range args {
		if d, ok := strings.CutPrefix(a, "--shared-dir="); ok {
			shared = d
		}
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return 2
		}
		fmt.Fprintf(c, "virtiofsd for %s\n", shared)
		c.Close()
	}
}

// Ping calls the agent's Ping over c (a hybrid vsock connection to port
// 1024) and returns the kernel release it answered (KernelRelease of
// its VMM's pid, for the fake agent); it closes c.
func Ping(ctx context.Context, c net.Conn) (string, error) {
	cl := ttrpc.NewClient(c)
	defer cl.Close()
	r, err := agentapi.NewAgentClient(cl).Ping(ctx, &agentapi.PingRequest{})
	if err != nil {
		return "", err
	}
	return r.GetKernelRelease(), nil
}
