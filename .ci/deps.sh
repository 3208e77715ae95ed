#!/usr/bin/env bash
# Installs everything `make test` needs on a Debian 12 machine, idempotently:
# Debian packages, and containerd/ctr/crictl built from the Go module proxy into
# a cache directory reused between runs ($KUASAR_TOOLS, default ~/.cache/kuasar-tools).
set -euo pipefail

CONTAINERD_VERSION=v2.4.2
CRICTL_VERSION=v1.37.0
TOOLS="${KUASAR_TOOLS:-$HOME/.cache/kuasar-tools}"

PACKAGES=(
  clang lld wasi-libc libclang-rt-14-dev-wasm32 wabt   # Wasm fixtures
  qemu-system-x86 busybox-static erofs-utils cpio xz-utils zstd  # micro-VM tests
  runc                                                  # the runc baseline beside kuasar
  protobuf-compiler                                     # agent API stubs (go generate)
  iproute2 procps psmisc                                # test inspection
)

need_sudo() { if [ "$(id -u)" -ne 0 ]; then echo sudo; fi; }

# One dpkg-query for every package keeps a run with everything installed
# (the no-op `make test` and `make demo` start with) well under a second.
installed=" $({ dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${PACKAGES[@]}" 2>/dev/null || true; } | awk '$1 == "ii" {printf "%s ", $2}') "
missing=()
for p in "${PACKAGES[@]}"; do
  [[ "$installed" == *" $p "* ]] || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  $(need_sudo) apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $(need_sudo) apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

install_go_tool() { # DIR "BIN..." PKG...
  local dir=$1 bins=$2 missing=""; shift 2
  for b in $bins; do [ -x "$dir/$b" ] || missing="$missing $b"; done
  if [ -z "$missing" ]; then return; fi
  echo "deps: building$missing into $dir (a few minutes the first time)"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  (cd / && GOBIN="$dir.tmp" GOFLAGS=-buildvcs=false go install "$@")
  mkdir -p "$dir" && mv "$dir.tmp"/* "$dir"/ && rmdir "$dir.tmp"
}
install_go_tool "$TOOLS/containerd-$CONTAINERD_VERSION" "containerd ctr containerd-shim-runc-v2" \
  github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION \
  github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION \
  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION
install_go_tool "$TOOLS/crictl-$CRICTL_VERSION" crictl sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION
# wazero's CLI, the version go.mod requires: `kuasar bench`'s fresh-process-per-Wasm-task baseline.
WAZERO_VERSION=$(cd "$(dirname "$0")/.." && go list -m -f '{{.Version}}' github.com/tetratelabs/wazero)
install_go_tool "$TOOLS/wazero-$WAZERO_VERSION" wazero github.com/tetratelabs/wazero/cmd/wazero@$WAZERO_VERSION

echo "deps: ok (tools in $TOOLS)"
