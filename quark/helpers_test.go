package quark

import (
	"net"

	"github.com/containerd/errdefs/pkg/errgrpc"
)

func dialUnix(path string) (net.Conn, error) { return net.Dial("unix", path) }

func errgrpcNative(err error) error { return errgrpc.ToNative(err) }
