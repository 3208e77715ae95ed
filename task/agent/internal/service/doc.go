// Package service is the containerd Task API v3 service (and the stdio part
// of the kuasar agent service) that the guest agent serves inside a micro-VM:
// it runs each container as ordinary Linux processes in their own mount, pid,
// uts and ipc namespaces, chrooted (pivot_root) into the bundle's rootfs.
//
// Process model: Create forks a re-exec of the agent binary (the hidden
// subcommand HelperInit, see RunHelper) in new namespaces. The helper sets up
// the root file system, reports back, and waits; Start releases it and it
// execs the container's process, which therefore keeps the pid reported by
// Create (like runc's create/start split). Exec processes are forked at
// Start directly into the container's namespaces (setns on a dedicated OS
// thread for pid/uts/ipc, chroot into /proc/<init>/root for the mount view).
//
// Every child is started through a guestinit.Reaper, which owns wait4 for the
// whole agent and routes exit statuses to process records by pid.
package service
