package vmbackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/vm"
)

// MkfsErofs is the tool that builds rootfs images for rootfs_mode "block"
// (Debian package erofs-utils).
const MkfsErofs = "mkfs.erofs"

// Guest paths of a block-mode container rootfs (see blockMounts).
const (
	// guestLowerDir holds one read-only erofs mount per container.
	guestLowerDir = "/run/kuasar/lower"
	// guestOverlayDir holds one tmpfs per container with the overlay's
	// upper and work directories and its mount point.
	guestOverlayDir = "/run/kuasar/overlay"
)

// blockRootfs is a container rootfs handed to the guest as an erofs image
// on a virtio-blk disk attached at boot.
type blockRootfs struct {
	// cid is the container the image belongs to.
	cid string
	// image is the erofs image file on the host.
	image string
	// device is the disk's node in the guest (/dev/vda).
	device string
}

// guestRoot is where the container's writable rootfs (the overlay) is
// mounted in the guest.
func (b *blockRootfs) guestRoot() string {
	return guestOverlayDir + "/" + b.cid + "/work/rootfs"
}

// mounts are the SetupSandbox mounts that turn the disk into a writable
// rootfs in the guest: the erofs image read-only, a tmpfs holding the
// overlay's upper and work directories, and the overlay itself.
//
// The agent's generic mounts create each target directory (MkdirAll) but
// nothing else, and overlayfs needs its upper and work directories to
// exist, side by side on one mount, with nothing else mounted in between.
// Both are therefore created as parents of a mount target: the work
// directory as the parent of the overlay's own mount point (overlayfs
// ignores entries in the work directory other than its "work" and "index"
// children), the upper directory as the parent of a 4 KiB read-only
// placeholder tmpfs on upper/dev. Overlayfs reads its upper layer through
// the underlying directory, not through mounts on it, so the placeholder
// is invisible to the container: it only sees an empty /dev directory in
// the upper layer, which merges with the image's /dev and is covered by
// the /dev the agent mounts in every container anyway.
func (b *blockRootfs) mounts() []*agentapi.Mount {
	lower := guestLowerDir + "/" + b.cid
	base := guestOverlayDir + "/" + b.cid
	upper, work := base+"/upper", base+"/work"
	return []*agentapi.Mount{
		{Source: b.device, Fstype: "erofs", Target: lower, Options: []string{"ro"}},
		{Source: "tmpfs", Fstype: "tmpfs", Target: base, Options: []string{"mode=0755"}},
		{Source: "tmpfs", Fstype: "tmpfs", Target: upper + "/dev", Options: []string{"ro", "size=4k", "mode=0555"}},
		{Source: "overlay", Fstype: "overlay", Target: b.guestRoot(), Options: []string{
			"lowerdir=" + lower, "upperdir=" + upper, "workdir=" + work,
		}},
	}
}

// buildErofs writes an erofs image of the directory rootfs to image with
// tool (mkfs.erofs from PATH when empty). Uncompressed: lz4 would shrink
// the image but costs the guest CPU time on every read, and under TCG that
// is the scarce resource.
func buildErofs(ctx context.Context, tool, rootfs, image string) error {
	if tool == "" {
		tool = MkfsErofs
	}
	path, err := exec.LookPath(tool)
	if err != nil {
		return fmt.Errorf("rootfs_mode \"block\" builds an erofs image of the rootfs with %s, which is not usable (%w): apt-get install erofs-utils, or use rootfs_mode = \"9p\": %w",
			tool, err, errdefs.ErrFailedPrecondition)
	}
	t0 := time.Now()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "--quiet", image, rootfs)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ctx.Err() == nil {
			return fmt.Errorf("%s %s %s failed (%w): %s: %w", path, image, rootfs, err, strings.TrimSpace(out.String()), errdefs.ErrFailedPrecondition)
		}
		return fmt.Errorf("%s %s %s: %w", path, image, rootfs, err)
	}
	log.G(ctx).WithField("rootfs", rootfs).WithField("took", time.Since(t0)).Debug("vm: built erofs rootfs image")
	return nil
}

// disk is the vm.Disk that carries b's image (the first disk).
func (b *blockRootfs) disk() vm.Disk {
	return vm.Disk{ID: "rootfs0", Path: b.image, ReadOnly: true}
}
