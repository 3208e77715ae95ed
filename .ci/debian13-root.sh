#!/usr/bin/env bash
# Prints the path of a Debian 13 (trixie) root holding libwasmedge-dev 0.14,
# building it first when it is not cached.
#
# Debian 12 has no libwasmedge and its glibc (2.36) is too old for trixie's
# binaries, so `make wasmedge` builds inside this root and links the binaries
# against the root's loader and libraries (see .ci/wasmedge.sh).
#
# The root is keyed on this script's package list: it lives in
# $KUASAR_DEBIAN13_CACHE (default ~/.cache/kuasar-debian13)/root-<key>, is
# built in a temporary directory beside it and renamed into place only when
# complete, under a lock, so an interrupted or concurrent run never leaves or
# uses a half root. The wasmedge package is WasmEdge's own CLI, which the
# CLI parity test compares `kuasar run --engine wasmedge` with. Older roots
# (other keys) are removed: the cache stays at one root (500 MB). Cold:
# 3.5-4 minutes here (debootstrap and apt from Debian's mirror); warm:
# instant.
set -euo pipefail

SUITE=trixie
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="gcc libc6-dev libwasmedge-dev pkg-config wasmedge"
CACHE="${KUASAR_DEBIAN13_CACHE:-$HOME/.cache/kuasar-debian13}"
KEY=$(printf '%s\n' "v1" "$SUITE" "$PACKAGES" | sha256sum | cut -c1-12)
ROOT="$CACHE/root-$KEY"

if [ -f "$ROOT/.complete" ]; then
  echo "$ROOT"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "debian13-root: building the Debian 13 root needs root (debootstrap, chroot): run as root or install libwasmedge-dev natively" >&2
  exit 1
fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ -f "$ROOT/.complete" ]; then # built by a concurrent run while we waited
  echo "$ROOT"
  exit 0
fi

if ! command -v debootstrap >/dev/null; then
  echo "debian13-root: installing debootstrap" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
fi

TMP="$CACHE/.tmp-$KEY-$$"
cleanup() { rm -rf --one-file-system "$TMP"; }
trap cleanup EXIT
start=$(date +%s)
echo "debian13-root: debootstrap $SUITE into $TMP (about a minute, once)" >&2
debootstrap --variant=minbase "$SUITE" "$TMP" "$MIRROR" >&2
cp /etc/resolv.conf "$TMP/etc/resolv.conf"
# The bind mounts live in a private mount namespace: nothing to unmount after.
unshare --mount --propagation private env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin ROOTFS="$TMP" PACKAGES="$PACKAGES" sh -ec '
  mount -t proc proc "$ROOTFS/proc"
  mount --rbind /dev "$ROOTFS/dev"
  mount --rbind /sys "$ROOTFS/sys"
  chroot "$ROOTFS" sh -ec "
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
    apt-get clean
    rm -rf /var/lib/apt/lists/*
  "
' >&2
touch "$TMP/.complete"
for old in "$CACHE"/root-*; do
  [ "$old" = "$ROOT" ] || [ ! -e "$old" ] || rm -rf --one-file-system "$old"
done
mv "$TMP" "$ROOT"
trap - EXIT
echo "debian13-root: built $ROOT in $(( $(date +%s) - start )) s ($(du -sh "$ROOT" | cut -f1))" >&2
echo "$ROOT"
