package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kuasar-go/kuasar/cmd/internal/backends"
	"github.com/kuasar-go/kuasar/internal/fsroot"
	"github.com/kuasar-go/kuasar/sandboxer/config"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

// checkStatus is the verdict of one preflight check.
type checkStatus string

const (
	checkOK   checkStatus = "ok"
	checkWarn checkStatus = "warn"
	checkFail checkStatus = "FAIL"
)

// checkResult is one line of `kuasar check`'s report.
type checkResult struct {
	area   string
	status checkStatus
	detail string
	fix    string
}

// emptyCommand is the smallest WASI command: a module exporting an empty
// _start. The engine check compiles and runs it.
var emptyCommand = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60,
	0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0x07, 0x0a, 0x01, 0x06, 0x5f, 0x73,
	0x74, 0x61, 0x72, 0x74, 0x00, 0x00, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b,
}

// newCheckCommand builds `kuasar check`, the preflight checks: the Wasm
// engine and its cache, the image store, the configuration, every
// hypervisor's binary, kernel and initramfs, the accelerator, and the
// containerd integration (the shim binary in PATH, containerd's and the
// sandboxer's sockets). It exits 1 when a check fails; warnings concern
// sandbox kinds or integrations not in use.
func (c *cli) newCheckCommand() *cobra.Command {
	var (
		configPath string
		format     formatFlag
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that this host can run each sandbox kind, and say how to fix what is missing",
		Long: `Checks that this host can run each sandbox kind (Wasm, the VM hypervisors,
the accelerator) and the containerd integration, and says how to fix what is
missing. Each line is ok, warn (a kind or integration not in use) or FAIL.

Exit codes: 0 when nothing failed, 1 when a check failed.`,
		GroupID: "host",
		Args:    cobra.NoArgs,
		RunE: c.action(func(cmd *cobra.Command, args []string) int {
			results := runChecks(c.ctx, c.env.stateDir, configPath)
			if format == "json" {
				return printChecksJSON(c.env.stdout, results)
			}
			return printChecks(c.env.stdout, results)
		}),
	}
	cmd.Flags().StringVar(&configPath, "config", config.DefaultPath, "the kuasar-sandboxer configuration `FILE` to check (embedded defaults when absent)")
	format.register(cmd)
	return cmd
}

// checkJSON is one check in `kuasar check --format json`.
type checkJSON struct {
	Area string `json:"area"`
	// Status is ok, warn or fail.
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// printChecksJSON writes {"ok": bool, "checks": [...]} and returns the exit
// code printChecks would.
func printChecksJSON(w io.Writer, results []checkResult) int {
	out := struct {
		OK     bool        `json:"ok"`
		Checks []checkJSON `json:"checks"`
	}{OK: true, Checks: []checkJSON{}}
	for _, r := range results {
		j := checkJSON{Area: r.area, Status: strings.ToLower(string(r.status)), Detail: r.detail}
		if r.status != checkOK {
			j.Fix = r.fix
		}
		out.OK = out.OK && r.status != checkFail
		out.Checks = append(out.Checks, j)
	}
	writeJSON(w, out)
	if !out.OK {
		return 1
	}
	return 0
}

func printChecks(w io.Writer, results []checkResult) int {
	code := 0
	for _, r := range results {
		fmt.Fprintf(w, "%-4s  %-22s %s\n", r.status, r.area, r.detail)
		if r.fix != "" && r.status != checkOK {
			fmt.Fprintf(w, "      %-22s fix: %s\n", "", r.fix)
		}
		if r.status == checkFail {
			code = 1
		}
	}
	return code
}

func runChecks(ctx context.Context, stateDir, configPath string) []checkResult {
	var out []checkResult
	add := func(area string, status checkStatus, detail, fix string) {
		out = append(out, checkResult{area, status, detail, fix})
	}

	// Guest paths: openat2(2) with RESOLVE_IN_ROOT (Linux 5.6+).
	if err := fsroot.Check(); err != nil {
		add("path resolution", checkFail, err.Error(), "run on Linux 5.6 or later and let kuasar call openat2 (seccomp)")
	} else {
		add("path resolution", checkOK, "openat2(2) with RESOLVE_IN_ROOT", "")
	}

	// Wasm: the engine compiles and runs a module, and its cache is writable.
	cacheDir := filepath.Join(stateDir, "cache", wazero.EngineName)
	if err := writableDir(cacheDir); err != nil {
		add("wasm cache", checkFail, err.Error(), "set KUASAR_STATE_DIR to a writable directory")
	} else {
		add("wasm cache", checkOK, cacheDir, "")
	}
	if took, err := probeEngine(ctx, cacheDir); err != nil {
		add("wasm engine", checkFail, err.Error(), "report this as a bug with `kuasar version`")
	} else {
		add("wasm engine", checkOK, fmt.Sprintf("wazero compiled and ran a module in %v", took.Round(time.Microsecond)), "")
	}
	imagesDir := filepath.Join(stateDir, "images")
	if err := writableDir(imagesDir); err != nil {
		add("image store", checkFail, err.Error(), "set KUASAR_STATE_DIR to a writable directory")
	} else {
		add("image store", checkOK, imagesDir, "")
	}

	// Configuration.
	cfg, err := backends.Load(configPath, false)
	if err != nil {
		add("config", checkFail, err.Error(), "correct the file, or remove it to use the embedded defaults")
		return out
	}
	if _, statErr := os.Stat(configPath); statErr == nil {
		add("config", checkOK, configPath, "")
	} else {
		add("config", checkOK, "embedded defaults ("+configPath+" absent)", "")
	}
	out = append(out, settingResults(cfg)...)

	// Micro-VMs: each hypervisor's files, the default one failing hard.
	for _, name := range []string{vm.QEMU, vm.CloudHypervisor, vm.StratoVirt} {
		h, _ := cfg.VM.Get(name)
		vc := vm.Config{Path: h.Path, Kernel: h.Kernel, Initramfs: h.Initramfs, RootfsMode: h.RootfsMode, Accel: h.Accel}
		status := checkWarn
		if name == cfg.VM.Default {
			status = checkFail
		}
		if err := vc.Validate(name); err != nil {
			fix := "install it, or set the key named above in " + configPath
			if name != vm.QEMU {
				fix = name + " is not packaged for Debian 12; install it from its project, or keep hypervisor.default = \"qemu\""
			}
			add("vm "+name, status, err.Error(), fix)
			continue
		}
		add("vm "+name, checkOK, fmt.Sprintf("%s, kernel %s, initramfs %s", h.Path, h.Kernel, h.Initramfs), "")
	}
	accel, reason := vmbackend.DetectAccel(ctx)
	if accel == vmbackend.AccelKVM {
		add("vm accelerator", checkOK, "kvm: "+reason, "")
	} else {
		add("vm accelerator", checkWarn, "tcg (software emulation, seconds per boot): "+reason,
			"run on a host with usable KVM (bare metal, or nested virtualisation that runs stock kernels)")
	}

	add(templateCheck(ctx, cfg.VM, filepath.Join(stateDir, "vm-templates"), filepath.Join(cfg.Sandboxer.StateDir, "vm-templates")))

	// containerd integration.
	if p, err := exec.LookPath("containerd-shim-kuasar-v1"); err != nil {
		add("containerd shim", checkWarn, "containerd-shim-kuasar-v1 is not in PATH: containerd will fail tasks with \"binary not installed\"",
			"make install (or copy bin/containerd-shim-kuasar-v1 into containerd's PATH)")
	} else {
		add("containerd shim", checkOK, p, "")
	}
	for _, s := range []struct{ area, path, fix string }{
		{"containerd socket", cfg.Sandboxer.ContainerdAddress, "start containerd, or set sandboxer.containerd_address"},
		{"sandboxer socket", cfg.Sandboxer.Listen, "start kuasar-sandboxer (see docs/sandboxer.md)"},
	} {
		if err := dialUnix(s.path); err != nil {
			add(s.area, checkWarn, err.Error(), s.fix)
		} else {
			add(s.area, checkOK, s.path+" answers", "")
		}
	}
	return out
}

// probeEngine compiles and runs the smallest WASI command.
func probeEngine(ctx context.Context, cacheDir string) (time.Duration, error) {
	start := time.Now()
	eng, err := wazero.New(ctx, wazero.WithCacheDir(cacheDir))
	if err != nil {
		return 0, err
	}
	defer eng.Close(ctx)
	mod, err := eng.Compile(ctx, emptyCommand)
	if err != nil {
		return 0, err
	}
	code, err := mod.Run(ctx, wasm.RunConfig{Timeout: 10 * time.Second})
	if err != nil {
		return 0, err
	}
	if code != 0 {
		return 0, fmt.Errorf("the empty module exited %d, want 0", code)
	}
	return time.Since(start), nil
}

// writableDir makes dir if needed and checks a file can be created in it.
func writableDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".check-*")
	if err != nil {
		return fmt.Errorf("%s is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

func dialUnix(path string) error {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return fmt.Errorf("%s does not answer: %w", path, err)
	}
	return c.Close()
}
