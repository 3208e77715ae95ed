package wasip1

import (
	"context"
	"fmt"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// ModuleName is the import module of WASI preview 1.
const ModuleName = "wasi_snapshot_preview1"

const (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

// hostFunc is one WASI function: it reads its parameters from stack and
// returns the errno that becomes its result.
type hostFunc func(in *Instance, ctx context.Context, mod api.Module, stack []uint64) Errno

type function struct {
	name   string
	params []api.ValueType
	fn     hostFunc
}

// functions are every function of the preview-1 witx, in its order, with
// their core-Wasm parameter types; all return an errno (i32) except
// proc_exit.
var functions = []function{
	{"args_get", []api.ValueType{i32, i32}, argsGet},
	{"args_sizes_get", []api.ValueType{i32, i32}, argsSizesGet},
	{"environ_get", []api.ValueType{i32, i32}, environGet},
	{"environ_sizes_get", []api.ValueType{i32, i32}, environSizesGet},
	{"clock_res_get", []api.ValueType{i32, i32}, clockResGet},
	{"clock_time_get", []api.ValueType{i32, i64, i32}, clockTimeGet},
	{"fd_advise", []api.ValueType{i32, i64, i64, i32}, fdAdvise},
	{"fd_allocate", []api.ValueType{i32, i64, i64}, fdAllocate},
	{"fd_close", []api.ValueType{i32}, fdClose},
	{"fd_datasync", []api.ValueType{i32}, fdDatasync},
	{"fd_fdstat_get", []api.ValueType{i32, i32}, fdFdstatGet},
	{"fd_fdstat_set_flags", []api.ValueType{i32, i32}, fdFdstatSetFlags},
	{"fd_fdstat_set_rights", []api.ValueType{i32, i64, i64}, fdFdstatSetRights},
	{"fd_filestat_get", []api.ValueType{i32, i32}, fdFilestatGet},
	{"fd_filestat_set_size", []api.ValueType{i32, i64}, fdFilestatSetSize},
	{"fd_filestat_set_times", []api.ValueType{i32, i64, i64, i32}, fdFilestatSetTimes},
	{"fd_pread", []api.ValueType{i32, i32, i32, i64, i32}, fdPread},
	{"fd_prestat_get", []api.ValueType{i32, i32}, fdPrestatGet},
	{"fd_prestat_dir_name", []api.ValueType{i32, i32, i32}, fdPrestatDirName},
	{"fd_pwrite", []api.ValueType{i32, i32, i32, i64, i32}, fdPwrite},
	{"fd_read", []api.ValueType{i32, i32, i32, i32}, fdRead},
	{"fd_readdir", []api.ValueType{i32, i32, i32, i64, i32}, fdReaddir},
	{"fd_renumber", []api.ValueType{i32, i32}, fdRenumber},
	{"fd_seek", []api.ValueType{i32, i64, i32, i32}, fdSeek},
	{"fd_sync", []api.ValueType{i32}, fdSync},
	{"fd_tell", []api.ValueType{i32, i32}, fdTell},
	{"fd_write", []api.ValueType{i32, i32, i32, i32}, fdWrite},
	{"path_create_directory", []api.ValueType{i32, i32, i32}, pathCreateDirectory},
	{"path_filestat_get", []api.ValueType{i32, i32, i32, i32, i32}, pathFilestatGet},
	{"path_filestat_set_times", []api.ValueType{i32, i32, i32, i32, i64, i64, i32}, pathFilestatSetTimes},
	{"path_link", []api.ValueType{i32, i32, i32, i32, i32, i32, i32}, pathLink},
	{"path_open", []api.ValueType{i32, i32, i32, i32, i32, i64, i64, i32, i32}, pathOpen},
	{"path_readlink", []api.ValueType{i32, i32, i32, i32, i32, i32}, pathReadlink},
	{"path_remove_directory", []api.ValueType{i32, i32, i32}, pathRemoveDirectory},
	{"path_rename", []api.ValueType{i32, i32, i32, i32, i32, i32}, pathRename},
	{"path_symlink", []api.ValueType{i32, i32, i32, i32, i32}, pathSymlink},
	{"path_unlink_file", []api.ValueType{i32, i32, i32}, pathUnlinkFile},
	{"poll_oneoff", []api.ValueType{i32, i32, i32, i32}, pollOneoff},
	{"proc_raise", []api.ValueType{i32}, procRaise},
	{"sched_yield", nil, schedYield},
	{"random_get", []api.ValueType{i32, i32}, randomGet},
	{"sock_accept", []api.ValueType{i32, i32, i32}, sockAccept},
	{"sock_recv", []api.ValueType{i32, i32, i32, i32, i32, i32}, sockRecv},
	{"sock_send", []api.ValueType{i32, i32, i32, i32, i32}, sockSend},
	{"sock_shutdown", []api.ValueType{i32, i32}, sockShutdown},
}

// FunctionNames lists the functions the host module exports.
func FunctionNames() []string {
	names := make([]string, 0, len(functions)+1)
	for _, f := range functions {
		names = append(names, f.name)
	}
	return append(names, "proc_exit")
}

// call adapts a hostFunc to wazero: it finds the guest's Instance in ctx
// and stores the errno as the function's result. A call without an
// Instance (a module run outside this package's Run) gets ENOSYS.
type call hostFunc

// Call implements api.GoModuleFunction.
func (f call) Call(ctx context.Context, mod api.Module, stack []uint64) {
	in := fromContext(ctx)
	if in == nil {
		stack[0] = uint64(ErrnoNosys)
		return
	}
	stack[0] = uint64(f(in, ctx, mod, stack))
}

// UnstableModuleName is the import module of WASI snapshot 0, which
// toolchains used before preview 1.
const UnstableModuleName = "wasi_unstable"

// unstableFunctions are the functions whose snapshot-0 form differs from
// preview 1's: filestat has a u32 nlink, clock subscriptions an extra
// identifier, whence another order. Every other function is the same.
var unstableFunctions = map[string]hostFunc{
	"fd_filestat_get":   fdFilestatGetUnstable,
	"path_filestat_get": pathFilestatGetUnstable,
	"poll_oneoff":       pollOneoffUnstable,
	"fd_seek":           fdSeekUnstable,
}

// NewHostModule returns a builder of the WASI host module under name:
// ModuleName, or UnstableModuleName for modules of older toolchains (with
// snapshot 0's layouts where they differ). Instantiate it in a runtime
// before the guests that import it.
func NewHostModule(r wazero.Runtime, name string) wazero.HostModuleBuilder {
	b := r.NewHostModuleBuilder(name)
	for _, f := range functions {
		fn := f.fn
		if u, ok := unstableFunctions[f.name]; ok && name == UnstableModuleName {
			fn = u
		}
		b.NewFunctionBuilder().
			WithGoModuleFunction(call(fn), f.params, []api.ValueType{i32}).
			Export(f.name)
	}
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(procExit), []api.ValueType{i32}, nil).
		Export("proc_exit")
	return b
}

// Instantiate instantiates the host module under name in r.
func Instantiate(ctx context.Context, r wazero.Runtime, name string) error {
	if _, err := NewHostModule(r, name).Instantiate(ctx); err != nil {
		return fmt.Errorf("instantiate the WASI host module %s: %w", name, err)
	}
	return nil
}
