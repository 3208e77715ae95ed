package guestinit

import (
	"fmt"
	"os"
	"strings"

	"github.com/containerd/errdefs"
)

// Channel kinds accepted in kuasar.channel= on the kernel command line.
const (
	// ChannelAuto tries the virtio-serial port first, then vsock.
	ChannelAuto = ""
	// ChannelSerial uses the virtio-serial port named kuasar.agent.
	ChannelSerial = "serial"
	// ChannelVsock listens on AF_VSOCK port VsockPort.
	ChannelVsock = "vsock"
)

// Config is what the agent reads from the kernel command line.
type Config struct {
	// Channel is ChannelAuto, ChannelSerial or ChannelVsock.
	Channel string
	// Debug makes the agent log at debug level to /dev/console.
	Debug bool
}

// ParseCmdline parses a kernel command line (the contents of /proc/cmdline)
// and extracts the kuasar.* parameters. Unknown parameters are ignored; a
// kuasar.channel value other than serial or vsock is an error naming the fix.
func ParseCmdline(cmdline string) (Config, error) {
	var cfg Config
	for _, f := range strings.Fields(cmdline) {
		key, val, hasVal := strings.Cut(f, "=")
		switch key {
		case "kuasar.channel":
			switch val {
			case ChannelSerial, ChannelVsock:
				cfg.Channel = val
			default:
				return cfg, fmt.Errorf("kernel command line: kuasar.channel=%q is not supported, use kuasar.channel=serial or kuasar.channel=vsock: %w", val, errdefs.ErrInvalidArgument)
			}
		case "kuasar.debug":
			switch {
			case !hasVal, val == "1", val == "true", val == "yes", val == "on":
				cfg.Debug = true
			case val == "0", val == "false", val == "no", val == "off":
				cfg.Debug = false
			default:
				return cfg, fmt.Errorf("kernel command line: kuasar.debug=%q is not a boolean, use kuasar.debug=1 or kuasar.debug=0: %w", val, errdefs.ErrInvalidArgument)
			}
		}
	}
	return cfg, nil
}

// ReadCmdline reads and parses /proc/cmdline.
func ReadCmdline() (Config, error) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return Config{}, fmt.Errorf("read kernel command line: %w", err)
	}
	return ParseCmdline(string(b))
}
