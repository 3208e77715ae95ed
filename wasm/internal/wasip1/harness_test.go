package wasip1

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/fsroot"
)

// The tests call the host's functions one at a time through the wasip1
// fixture, which re-exports every import, and check the errno and what the
// function wrote into guest memory, as the preview-1 witx describes them.

var (
	shared struct {
		r        wazero.Runtime
		cm       wazero.CompiledModule
		unstable wazero.CompiledModule
		err      error
	}
	sharedOnce sync.Once
)

func runtimeForTests(t *testing.T) (wazero.Runtime, wazero.CompiledModule) {
	sharedOnce.Do(func() {
		ctx := context.Background()
		r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
		if err := Instantiate(ctx, r, ModuleName); err != nil {
			shared.err = err
			return
		}
		if err := Instantiate(ctx, r, UnstableModuleName); err != nil {
			shared.err = err
			return
		}
		shared.r = r
		if shared.cm, shared.err = r.CompileModule(ctx, fixtures.WASIP1); shared.err == nil {
			shared.unstable, shared.err = r.CompileModule(ctx, fixtures.WASIUnstable)
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.r, shared.cm
}

// Guest memory layout of the tests.
const (
	resPtr  = 0    // results (fd, sizes, stats): 512 bytes
	iovPtr  = 512  // iovec arrays
	strPtr  = 1024 // path arguments
	str2Ptr = 3072 // second path argument
	bufPtr  = 8192 // data buffers
)

// env is one guest instance with a preopened temporary directory at fd 3
// ("/sandbox") and a read-only one at fd 4 ("/ro").
type env struct {
	t      *testing.T
	ctx    context.Context
	mod    api.Module
	in     *Instance
	dir    string // host directory of fd 3
	rodir  string // host directory of fd 4
	stdout *bytes.Buffer
}

type envOpt func(*Config)

func newEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	r, cm := runtimeForTests(t)
	dir, rodir := t.TempDir(), t.TempDir()
	root, err := fsroot.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	roroot, err := fsroot.Open(rodir)
	if err != nil {
		t.Fatal(err)
	}
	out := &bytes.Buffer{}
	cfg := Config{
		Args: []string{"prog", "a b"}, Env: []string{"K=V"}, Stdout: out,
		Preopens: []Preopen{{Root: root, GuestPath: "/sandbox"}, {Root: roroot, GuestPath: "/ro", ReadOnly: true}},
	}
	for _, o := range opts {
		o(&cfg)
	}
	in := New(cfg)
	ctx := WithInstance(context.Background(), in)
	if len(cfg.Args) > 0 && cfg.Args[0] == "unstable" { // the snapshot-0 fixture
		cm = shared.unstable
	}
	mod, err := r.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mod.Close(context.Background())
		in.Close()
	})
	return &env{t: t, ctx: ctx, mod: mod, in: in, dir: dir, rodir: rodir, stdout: out}
}

// call calls the WASI function name and returns its errno.
func (e *env) call(name string, args ...uint64) Errno {
	e.t.Helper()
	f := e.mod.ExportedFunction(name)
	if f == nil {
		e.t.Fatalf("no function %s", name)
	}
	res, err := f.Call(e.ctx, args...)
	if err != nil {
		e.t.Fatalf("%s: %v", name, err)
	}
	return Errno(res[0])
}

// str puts s at ptr and returns the (ptr, len) pair of a string argument.
func (e *env) str(ptr uint32, s string) (uint64, uint64) {
	e.t.Helper()
	if !e.mod.Memory().WriteString(ptr, s) {
		e.t.Fatal("string out of memory")
	}
	return uint64(ptr), uint64(len(s))
}

func (e *env) u32(ptr uint32) uint32 {
	v, _ := e.mod.Memory().ReadUint32Le(ptr)
	return v
}

func (e *env) u64(ptr uint32) uint64 {
	v, _ := e.mod.Memory().ReadUint64Le(ptr)
	return v
}

func (e *env) bytes(ptr, n uint32) []byte {
	b, _ := e.mod.Memory().Read(ptr, n)
	return bytes.Clone(b)
}

// iov writes one iovec for the n bytes at bufPtr (holding data if given)
// and returns the (iovs, iovs_len) pair.
func (e *env) iov(data string, n uint32) (uint64, uint64) {
	if data != "" {
		e.mod.Memory().WriteString(bufPtr, data)
		n = uint32(len(data))
	}
	e.mod.Memory().WriteUint32Le(iovPtr, bufPtr)
	e.mod.Memory().WriteUint32Le(iovPtr+4, n)
	return iovPtr, 1
}

// open calls path_open on dirfd and returns the new fd.
func (e *env) open(dirfd uint32, lookup uint32, path string, oflags uint32, base, inh uint64, fdflags uint32) (uint32, Errno) {
	e.t.Helper()
	p, n := e.str(strPtr, path)
	errno := e.call("path_open", uint64(dirfd), uint64(lookup), p, n, uint64(oflags), base, inh, uint64(fdflags), resPtr)
	if errno != 0 {
		return 0, errno
	}
	return e.u32(resPtr), 0
}

// mustOpen is open that fails the test on an error.
func (e *env) mustOpen(path string, oflags uint32, base uint64, fdflags uint32) uint32 {
	e.t.Helper()
	fd, errno := e.open(3, lookupflagSymlinkFollow, path, oflags, base, 0, fdflags)
	if errno != 0 {
		e.t.Fatalf("path_open %s: errno %d", path, errno)
	}
	return fd
}

// pathCall calls a function taking (fd, path, path_len, extra...).
func (e *env) pathCall(name string, fd uint32, path string, extra ...uint64) Errno {
	e.t.Helper()
	p, n := e.str(strPtr, path)
	return e.call(name, append([]uint64{uint64(fd), p, n}, extra...)...)
}

// write creates a file in the sandbox directory.
func (e *env) write(name, data string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.dir, name), []byte(data), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) read(name string) string {
	b, err := os.ReadFile(filepath.Join(e.dir, name))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }
