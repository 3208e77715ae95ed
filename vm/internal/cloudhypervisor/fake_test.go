package cloudhypervisor_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeCH is an in-test Cloud Hypervisor API server on a unix socket. It
// validates every request body against the OpenAPI description, keeps
// the VM state machine (created → running → shutdown), answers like the
// real VMM, and serves the hybrid vsock socket named in vm.create.
type fakeCH struct {
	api *openAPI

	mu       sync.Mutex
	log      []string // "PUT /vm.create"
	bodies   map[string]map[string]any
	problems []string
	state    string
	vsock    net.Listener
	shutdown chan struct{}
}

func newFakeCH(api *openAPI) *fakeCH {
	return &fakeCH{api: api, bodies: map[string]map[string]any{}, shutdown: make(chan struct{})}
}

func (f *fakeCH) problem(format string, a ...any) {
	f.problems = append(f.problems, fmt.Sprintf(format, a...))
}

// move takes the VM from state from to state to, as a call that needs
// from does; in any other state it answers code with msg, as the VMM
// does, and reports false.
func (f *fakeCH) move(w http.ResponseWriter, from, to string, code int, msg string) bool {
	if f.state != from {
		http.Error(w, msg, code)
		return false
	}
	f.state = to
	return true
}

func (f *fakeCH) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ep := strings.TrimPrefix(r.URL.Path, "/api/v1")
	f.log = append(f.log, r.Method+" "+ep)
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
func (f *fakeCH) console(line string) {
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

// snapshot writes what Cloud Hypervisor's snapshot holds into the
// directory of a file:// URL: config.json (the VM's config), state.json
// and memory-ranges.
func (f *fakeCH) snapshot(url string) error {
	dir, ok := strings.CutPrefix(url, "file://")
	if !ok {
		return fmt.Errorf("destination_url %q: want file://", url)
	}
	cfg, _ := json.Marshal(f.bodies["/vm.create"])
	for name, b := range map[string][]byte{"config.json": cfg, "state.json": []byte(`{"fake":"device state"}`), "memory-ranges": []byte("guest memory")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// restore loads a snapshot as Cloud Hypervisor does: the config from
// config.json (every device recreated at the paths it names: the vsock
// socket listened on, the serial console file), the device state from
// state.json (refused when not JSON); the VM is then paused, or running
// with resume.
func (f *fakeCH) restore(body map[string]any) error {
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
// <port>\n" → "OK <hostport>\n", then echoes bytes for port 1024 (the
// agent); other ports are refused by closing the connection.
func (f *fakeCH) listenVsock(path string) {
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		f.problem("vsock listen %s: %v", path, err)
		return
	}
	f.vsock = l
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				rd := bufio.NewReader(c)
				line, err := rd.ReadString('\n')
				if err != nil || line != "CONNECT 1024\n" {
					return
				}
				fmt.Fprintf(c, "OK 1073741824\n")
				io.Copy(c, rd)
			}()
		}
	}()
}

func (f *fakeCH) close() {
	if f.vsock != nil {
		f.vsock.Close()
	}
}

// serveFakeCH runs the fake as a process: the test binary re-executed as
// the "cloud-hypervisor" binary with --api-socket path=S.
func serveFakeCH(args []string) int {
	for _, a := range args {
		if sock, ok := strings.CutPrefix(a, "--socket-path="); ok {
			return serveFakeVirtioFSD(sock, args)
		}
	}
	if len(args) == 1 && args[0] == "--version" {
		fmt.Println("cloud-hypervisor v53.0-fake")
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
	api, err := readOpenAPI()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	f := newFakeCH(api)
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
	f.mu.Lock()
	defer f.mu.Unlock()
	f.close()
	rec := os.Getenv("KUASAR_FAKE_CH_RECORD")
	if rec == "" { // one record per VMM: beside its API socket
		rec = filepath.Join(filepath.Dir(sock), "fake-record.json")
	}
	b, _ := json.Marshal(map[string]any{"log": f.log, "problems": f.problems, "bodies": f.bodies})
	os.WriteFile(rec, b, 0o600)
	return 0
}

// serveFakeVirtioFSD plays virtiofsd (the test binary re-executed with
// its command line): it listens on its --socket-path and tells every
// client which --shared-dir it serves, until killed.
func serveFakeVirtioFSD(sock string, args []string) int {
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

func TestMain(m *testing.M) {
	if os.Getenv("KUASAR_FAKE_CH") == "1" {
		os.Exit(serveFakeCH(os.Args[1:]))
	}
	os.Exit(m.Run())
}
