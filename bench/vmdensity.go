package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kuasar-go/kuasar/bench/internal/reap"
	"github.com/kuasar-go/kuasar/bench/internal/rig"
)

func init() {
	registry = append(registry, scenario{name: "vm-density", run: vmDensity,
		summary: "N live idle VM sandboxes (QEMU; 1, 2, 5, 10) in one sandboxer, from VM templates with the warm pool (the default config) and booted (template off): QEMU PSS, sandboxer RSS, PSS per VM"})
}

// vmDensityPoints are the VM density curve's points (live idle VM
// sandboxes). It is never part of --quick: each VM is a QEMU of about
// 60-230 MiB that boots in seconds under TCG.
var vmDensityPoints = []int{1, 2, 5, 10}

// vmDensityLevels returns the levels a run measures: every point, or with
// --runs N the points up to N and N itself (the curve's last level).
func vmDensityLevels(runs int) []int {
	if runs <= 0 {
		return vmDensityPoints
	}
	var out []int
	for _, n := range vmDensityPoints {
		if n < runs {
			out = append(out, n)
		}
	}
	return append(out, runs)
}

// vmDensityMode is one arm of the VM density curve: how its sandboxes'
// VMs start, chosen by pod annotation.
type vmDensityMode struct {
	name string
	// template is true for the arm whose VMs must restore a template.
	template bool
	annot    map[string]string
}

// vmDensityModes are the curve's arms: the default config (a template
// restore, a warm-pool clone adopted when one is ready) and a full boot of
// the same kernel and initramfs, so the curve shows what templates save.
var vmDensityModes = []vmDensityMode{
	{name: "template", template: true, annot: map[string]string{"kuasar.io/isolation": "vm"}},
	{name: "boot", annot: map[string]string{"kuasar.io/isolation": "vm", "kuasar.io/vm-template": "off"}},
}

// qemuMemory is the memory of the QEMU processes below the sandboxer.
type qemuMemory struct {
	procs int
	// restored is how many of them restore a VM template (their command
	// line has -incoming) rather than boot the kernel.
	restored int
	pss      uint64 // bytes, summed
}

// isQEMU tells a QEMU process by its /proc/PID/comm.
func isQEMU(comm string) bool { return strings.HasPrefix(strings.TrimSpace(comm), "qemu-system") }

// qemusBelow sums the PSS (smaps_rollup) of every QEMU that descends from
// pid: VMs of live sandboxes, warm-pool clones and template builders alike.
func qemusBelow(pid int) (qemuMemory, error) {
	desc, err := reap.Descendants(pid)
	if err != nil {
		return qemuMemory{}, err
	}
	var m qemuMemory
	for p := range desc {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
		if err != nil || !isQEMU(string(comm)) {
			continue
		}
		pss, err := pssBytes(p)
		if err != nil {
			continue // exited meanwhile, or a zombie
		}
		m.procs++
		m.pss += pss
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); err == nil && restoresTemplate(cmdline) {
			m.restored++
		}
	}
	return m, nil
}

// restoresTemplate tells, from a QEMU's NUL-separated /proc/PID/cmdline,
// whether it restores a VM template (-incoming) instead of booting, so the
// template arm can show its VMs really came from the template.
func restoresTemplate(cmdline []byte) bool {
	for _, arg := range bytes.Split(cmdline, []byte{0}) {
		if string(arg) == "-incoming" {
			return true
		}
	}
	return false
}

// pssBytes reads a process's proportional set size from
// /proc/PID/smaps_rollup: its private pages plus its share of the pages it
// shares (a template's memory file is shared by every clone, so PSS, not
// RSS, is what each VM costs).
func pssBytes(pid int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parsePss(f)
}

// parsePss returns the "Pss:" line of an smaps_rollup, in bytes.
func parsePss(r io.Reader) (uint64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "Pss:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("smaps_rollup: unexpected Pss line %q", sc.Text())
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("smaps_rollup: %w", err)
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("smaps_rollup has no Pss line (a zombie or a kernel thread)")
}

// settleQEMUs polls the QEMUs below pid until their number is at least
// want and their summed PSS has stayed within 2% for three probes (the
// warm pool refills in the background after each adoption), and returns
// their memory then; past the deadline it returns the last probe and
// settled false, so the caller says its figure is of a moving target.
func settleQEMUs(ctx context.Context, pid, want int) (m qemuMemory, settled bool, err error) {
	deadline := time.Now().Add(2 * time.Minute)
	var last qemuMemory
	probed, stable := false, 0
	for {
		m, err = qemusBelow(pid)
		if err != nil {
			return m, false, err
		}
		if probed && m.procs >= want && m.procs == last.procs &&
			float64(max(m.pss, last.pss)-min(m.pss, last.pss)) <= 0.02*float64(last.pss) {
			stable++
			if stable >= 3 {
				return m, true, nil
			}
		} else {
			stable = 0
		}
		last, probed = m, true
		if time.Now().After(deadline) {
			return m, false, nil
		}
		select {
		case <-ctx.Done():
			return m, false, ctx.Err()
		case <-time.After(time.Second): // polling interval: QEMU's memory under TCG moves slowly
		}
	}
}

func vmDensity(ctx context.Context, r *runner) error {
	sb, err := r.sandboxer(ctx, rig.SandboxerOptions{VMTemplates: true})
	if err != nil {
		return err
	}
	pid := sb.Proc.Pid()
	levels := vmDensityLevels(r.o.Runs)
	total := &Curve{Name: "QEMU PSS, template", XLabel: "live VM sandboxes", YLabel: "PSS of all QEMUs", Unit: "MiB"}
	totalBoot := &Curve{Name: "QEMU PSS, boot", XLabel: "live VM sandboxes", YLabel: "PSS of all QEMUs", Unit: "MiB"}
	perVM := &Curve{Name: "PSS per VM, template", XLabel: "live VM sandboxes", YLabel: "QEMU PSS / live sandbox", Unit: "MiB"}
	perVMBoot := &Curve{Name: "PSS per VM, boot", XLabel: "live VM sandboxes", YLabel: "QEMU PSS / live sandbox", Unit: "MiB"}
	sbRSS := &Curve{Name: "sandboxer RSS, template", XLabel: "live VM sandboxes", YLabel: "sandboxer RSS", Unit: "MiB"}
	sbRSSBoot := &Curve{Name: "sandboxer RSS, boot", XLabel: "live VM sandboxes", YLabel: "sandboxer RSS", Unit: "MiB"}
	r.res.Curves = append(r.res.Curves, perVM, perVMBoot, total, totalBoot, sbRSS, sbRSSBoot)
	curves := map[string][3]*Curve{"template": {total, perVM, sbRSS}, "boot": {totalBoot, perVMBoot, sbRSSBoot}}
	for _, mode := range vmDensityModes {
		start := r.series("VM sandbox start, "+mode.name, "s", "sandbox Create+Start of an idle VM sandbox ("+mode.name+") while the others stay up", false)
		start.noRatio = true
		var ids []string
		stopAll := func() {
			for _, id := range ids {
				if err := sb.StopSandbox(context.WithoutCancel(ctx), id); err != nil {
					r.progress.note(fmt.Sprintf("stopping VM sandbox %s: %v", id, err))
				}
			}
			ids = nil
		}
		// The pool's clone (and the template) exist before the first
		// sandbox: the base every level is measured against.
		base, settled, err := settleQEMUs(ctx, pid, 0)
		if err != nil {
			return err
		}
		if !settled {
			r.progress.note(fmt.Sprintf("%s: the QEMUs' memory before the first sandbox did not settle in 2 minutes: measured as it was", mode.name))
		}
		cs := curves[mode.name]
		for _, n := range levels {
			for len(ids) < n {
				if err := ctx.Err(); err != nil {
					stopAll()
					return err
				}
				id := r.id("vm")
				r.progress.status("%s: VM sandbox %d/%d", mode.name, len(ids)+1, levels[len(levels)-1])
				t0 := time.Now()
				_, closeFn, err := sb.StartSandboxAnnotated(ctx, id, mode.annot)
				if err != nil {
					stopAll()
					return fmt.Errorf("%s: VM sandbox %d: %w", mode.name, len(ids)+1, err)
				}
				closeFn()
				start.add(time.Since(t0).Seconds())
				ids = append(ids, id)
			}
			r.progress.status("%s: %d VM sandboxes: waiting for the QEMUs' memory to settle", mode.name, n)
			m, settled, err := settleQEMUs(ctx, pid, n)
			if err != nil {
				stopAll()
				return err
			}
			if !settled {
				r.progress.note(fmt.Sprintf("%s: %d VM sandboxes: the QEMUs' memory did not settle in 2 minutes (%d QEMUs): measured as it was", mode.name, n, m.procs))
			}
			rss, err := procRSS(pid)
			if err != nil {
				stopAll()
				return err
			}
			x := float64(n)
			cs[0].Points = append(cs[0].Points, Point{X: x, Y: float64(m.pss) / (1 << 20)})
			cs[1].Points = append(cs[1].Points, Point{X: x, Y: float64(m.pss-min(m.pss, base.pss)) / x / (1 << 20)})
			cs[2].Points = append(cs[2].Points, Point{X: x, Y: float64(rss) / (1 << 20)})
			r.progress.note(fmt.Sprintf("%s: %d VM sandboxes: %d QEMUs (%d restored from a template), PSS %.1f MiB (%.1f MiB per sandbox above the %d idle QEMUs' %.1f MiB), sandboxer RSS %.1f MiB",
				mode.name, n, m.procs, m.restored, float64(m.pss)/(1<<20), cs[1].Points[len(cs[1].Points)-1].Y, base.procs, float64(base.pss)/(1<<20), float64(rss)/(1<<20)))
			// The arm must be what it says: every live sandbox's VM
			// restored in the template arm, booted in the other (the
			// idle pool clone counted in base is restored in both).
			if mode.template && m.restored < n {
				r.progress.note(fmt.Sprintf("template: only %d of the %d QEMUs restore a template for %d live sandboxes: the others booted (see the sandboxer's log for the fall-back reason)", m.restored, m.procs, n))
			}
			if !mode.template && m.restored > base.restored {
				r.progress.note(fmt.Sprintf("boot: %d QEMUs restore a template beside the %d pool clones: a template-off pod was restored", m.restored-base.restored, base.restored))
			}
		}
		stopAll()
	}
	return nil
}
