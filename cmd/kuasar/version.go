package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kuasar-go/kuasar/internal/version"
)

// versionInfo is what `kuasar version` reports; its JSON form is
// `kuasar version --format json`.
type versionInfo struct {
	// Version is the kuasar-go release.
	Version string `json:"version"`
	// Revision is the git commit the binary was built from ("unknown"
	// when neither the linker nor the Go toolchain recorded it).
	Revision string `json:"revision"`
	// Modified reports a build from a work tree with uncommitted changes.
	Modified bool `json:"modified,omitempty"`
	// Go is the Go toolchain's version.
	Go string `json:"go"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
	// Engines are the Wasm engines --engine offers.
	Engines []engineVersion `json:"engines"`
	// Containerd is the containerd API kuasar-sandboxer and the shim speak.
	Containerd containerdVersion `json:"containerd"`
}

// engineVersion is one Wasm engine's version.
type engineVersion struct {
	Name string `json:"name"`
	// Version is the engine's version, "" when this build lacks it.
	Version string `json:"version"`
	// Built reports whether this binary has the engine.
	Built bool `json:"built"`
	// Note says how to get a missing engine.
	Note string `json:"note,omitempty"`
}

// containerdVersion names the containerd API the binaries were built
// against: the github.com/containerd/containerd/api module and the service
// versions used from it.
type containerdVersion struct {
	API        string `json:"api"`
	TaskAPI    string `json:"task_api"`
	SandboxAPI string `json:"sandbox_api"`
}

// Module paths whose versions `kuasar version` reads from the build info.
const (
	wazeroModule        = "github.com/tetratelabs/wazero"
	containerdAPIModule = "github.com/containerd/containerd/api"
)

// currentVersion gathers the version report from the linker's values and
// the binary's build info.
func currentVersion() versionInfo {
	v := versionInfo{
		Version:    version.Version,
		Revision:   version.Revision,
		Go:         runtime.Version(),
		Platform:   runtime.GOOS + "/" + runtime.GOARCH,
		Containerd: containerdVersion{TaskAPI: "v3", SandboxAPI: "v1"},
	}
	wz := engineVersion{Name: "wazero", Built: true}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Replace != nil {
				d = d.Replace
			}
			switch d.Path {
			case wazeroModule:
				wz.Version = d.Version
			case containerdAPIModule:
				v.Containerd.API = d.Version
			}
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && v.Revision == "unknown":
				v.Revision = s.Value
			case s.Key == "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	v.Engines = append(v.Engines, wz, wasmedgeVersion())
	return v
}

// printVersion writes the version report as text or JSON.
func printVersion(w io.Writer, format string) int {
	v := currentVersion()
	if format == "json" {
		return writeJSON(w, v)
	}
	rev := v.Revision
	if v.Modified {
		rev += " (modified)"
	}
	fmt.Fprintf(w, "kuasar %s\n", v.Version)
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "  revision:\t%s\n", rev)
	fmt.Fprintf(tw, "  go:\t%s %s\n", v.Go, v.Platform)
	for _, e := range v.Engines {
		if e.Built {
			fmt.Fprintf(tw, "  %s:\t%s\n", e.Name, e.Version)
		} else {
			fmt.Fprintf(tw, "  %s:\tnot in this build (%s)\n", e.Name, e.Note)
		}
	}
	fmt.Fprintf(tw, "  containerd API:\t%s (task %s, sandbox %s)\n", v.Containerd.API, v.Containerd.TaskAPI, v.Containerd.SandboxAPI)
	tw.Flush()
	return 0
}

// writeJSON writes v as indented JSON and a newline.
func writeJSON(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return 1
	}
	return 0
}

func (c *cli) newVersionCommand() *cobra.Command {
	var format formatFlag
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the version of kuasar, its engines and the containerd API",
		GroupID: "host",
		Args:    cobra.NoArgs,
		RunE: c.action(func(cmd *cobra.Command, args []string) int {
			return printVersion(c.env.stdout, string(format))
		}),
	}
	format.register(cmd)
	return cmd
}

// formatFlag is --format: text (the default) or json.
type formatFlag string

func (f *formatFlag) String() string {
	if *f == "" {
		return "text"
	}
	return string(*f)
}

func (f *formatFlag) Set(v string) error {
	if v != "text" && v != "json" {
		return fmt.Errorf("%q: use text or json", v)
	}
	*f = formatFlag(v)
	return nil
}

func (f *formatFlag) Type() string { return "text|json" }

// register adds --format to cmd, completing its two values.
func (f *formatFlag) register(cmd *cobra.Command) {
	cmd.Flags().Var(f, "format", "output format: text or json")
	cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
}
