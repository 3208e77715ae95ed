package bench

import (
	"slices"
	"strings"
	"testing"
)

func TestVMDensityLevels(t *testing.T) {
	tests := []struct {
		runs int
		want []int
	}{
		{0, []int{1, 2, 5, 10}},
		{1, []int{1}},
		{3, []int{1, 2, 3}},
		{5, []int{1, 2, 5}},
		{10, []int{1, 2, 5, 10}},
		{12, []int{1, 2, 5, 10, 12}},
	}
	for _, tt := range tests {
		if got := vmDensityLevels(tt.runs); !slices.Equal(got, tt.want) {
			t.Errorf("vmDensityLevels(%d) = %v, want %v", tt.runs, got, tt.want)
		}
	}
}

// TestVMDensitySelection: the VM curve is slow (QEMU boots), so --quick
// leaves it out, naming it still runs it, and its arms are VM sandboxes
// with and without templates.
func TestVMDensitySelection(t *testing.T) {
	quick, err := selectScenarios(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(namesOf(quick), "vm-density") {
		t.Errorf("--quick runs vm-density: %v", namesOf(quick))
	}
	all, err := selectScenarios(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(namesOf(all), "vm-density") {
		t.Errorf("a full run leaves vm-density out: %v", namesOf(all))
	}
	named, err := selectScenarios([]string{"vm-density"}, true)
	if err != nil || !slices.Equal(namesOf(named), []string{"vm-density"}) {
		t.Errorf("selecting vm-density by name: %v, %v", namesOf(named), err)
	}
	var modes []string
	for _, m := range vmDensityModes {
		modes = append(modes, m.name)
		if m.annot["kuasar.io/isolation"] != "vm" {
			t.Errorf("mode %s does not ask for a VM sandbox: %v", m.name, m.annot)
		}
	}
	if !slices.Equal(modes, []string{"template", "boot"}) {
		t.Errorf("modes %v, want template then boot", modes)
	}
	if _, off := vmDensityModes[0].annot["kuasar.io/vm-template"]; off {
		t.Errorf("the template arm overrides the default config: %v", vmDensityModes[0].annot)
	}
	if vmDensityModes[1].annot["kuasar.io/vm-template"] != "off" {
		t.Errorf("the boot arm does not turn templates off: %v", vmDensityModes[1].annot)
	}
}

func TestParsePss(t *testing.T) {
	const rollup = `55d5c8a00000-7ffd1b7fa000 ---p 00000000 00:00 0                          [rollup]
Rss:              234560 kB
Pss:               61234 kB
Pss_Dirty:         50000 kB
Shared_Clean:       1234 kB
`
	tests := []struct {
		name, in string
		want     uint64
		wantErr  bool
	}{
		{"rollup", rollup, 61234 * 1024, false},
		{"no Pss", "Rss: 1 kB\n", 0, true},
		{"bad unit", "Pss: 12 MB\n", 0, true},
		{"bad number", "Pss: x kB\n", 0, true},
	}
	for _, tt := range tests {
		got, err := parsePss(strings.NewReader(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%s: parsePss = %d, %v; want %d (error %v)", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
	for comm, want := range map[string]bool{"qemu-system-x86\n": true, "qemu-system-aarch64": true, "kuasar-sandboxe\n": false, "qemu-img": false} {
		if isQEMU(comm) != want {
			t.Errorf("isQEMU(%q) = %v", comm, !want)
		}
	}
}

// TestRestoresTemplate tells a restoring QEMU from a booting one by its
// NUL-separated command line, the way the template arm checks its VMs.
func TestRestoresTemplate(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		want    bool
	}{
		{"qemu-system-x86_64\x00-name\x00k\x00-incoming\x00defer\x00", true},
		{"qemu-system-x86_64\x00-name\x00k\x00-kernel\x00/vmlinux\x00", false},
		{"qemu-system-x86_64\x00-name\x00-incoming-x\x00", false},
		{"", false},
	} {
		if got := restoresTemplate([]byte(tc.cmdline)); got != tc.want {
			t.Errorf("restoresTemplate(%q) = %v, want %v", tc.cmdline, got, tc.want)
		}
	}
}
