package qemu

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/log"
)

// Accelerator decisions.
const (
	// AccelKVM runs the guest with hardware virtualization.
	AccelKVM = "kvm"
	// AccelTCG runs the guest under QEMU's binary translator.
	AccelTCG = "tcg"
)

var (
	accelOnce   sync.Once
	accelChoice string
	accelReason string
)

// DetectAccel picks KVM or TCG for "auto" with a cheap probe and logs the
// decision once per process. KVM is used only when /dev/kvm opens, the CPU
// advertises vmx or svm, and KVM is not the PVM flavour (kvm_pvm): a stock
// guest kernel dies there with "KVM internal error" (see docs/vm.md).
func DetectAccel(ctx context.Context) (accel, reason string) {
	accelOnce.Do(func() {
		accelChoice, accelReason = probeAccel()
		log.G(ctx).WithField("accel", accelChoice).WithField("reason", accelReason).Info("vm: qemu accelerator chosen")
	})
	return accelChoice, accelReason
}

func probeAccel() (string, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return AccelTCG, "/dev/kvm unusable: " + err.Error()
	}
	f.Close()
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		return AccelTCG, "KVM is PVM (nested, /sys/module/kvm_pvm): stock guest kernels fail with KVM internal errors"
	}
	flags := cpuFlags()
	if !flags["vmx"] && !flags["svm"] {
		return AccelTCG, "CPU has neither vmx nor svm flag"
	}
	return AccelKVM, "/dev/kvm usable and CPU has vmx/svm"
}

func cpuFlags() map[string]bool {
	m := map[string]bool{}
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "flags" {
			for _, fl := range strings.Fields(v) {
				m[fl] = true
			}
			break
		}
	}
	return m
}

// TSCKHz returns the host's TSC frequency in kHz from /proc/cpuinfo ("cpu
// MHz"), or 0 when unknown. Guests on microvm under TCG need it as
// tsc_early_khz or they hang after marking the TSC unstable.
func TSCKHz() uint64 {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil && mhz > 0 {
				return uint64(mhz * 1000)
			}
		}
	}
	return 0
}
