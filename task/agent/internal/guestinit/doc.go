// Package guestinit implements the PID-1 duties of the kuasar guest agent
// inside a micro-VM: base mounts, kernel module loading, kernel command line
// parsing, opening the host channel (virtio-serial port or vsock), reaping
// orphaned processes, and powering the VM off.
//
// Everything here is Linux-only and meant to run as root, normally as PID 1
// of a micro-VM whose initramfs was built by the VM engineer's guest builder.
package guestinit
