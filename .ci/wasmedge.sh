#!/usr/bin/env bash
# Builds kuasar-go with the WasmEdge engine (-tags wasmedge) and runs its tests.
#
#   .ci/wasmedge.sh build OUTDIR   kuasar, kuasar-sandboxer, containerd-shim-kuasar-v1, kuasar-vmm-jail
#   .ci/wasmedge.sh test OUTDIR    builds the test binaries of the packages
#                                  with WasmEdge tests into OUTDIR/test and
#                                  runs them: the engine's, the CLI parity
#                                  test against WasmEdge's own CLI, and
#                                  containerd + crictl pods on WasmEdge
#                                  (with the binaries `build` put in OUTDIR)
#
# Where libwasmedge 0.14 is installed (Debian 13+: libwasmedge-dev) it builds
# natively. Elsewhere (Debian 12 has no libwasmedge, and trixie's needs glibc
# 2.38+) it builds inside the cached Debian 13 root of .ci/debian13-root.sh
# and links every binary against that root: its ELF interpreter is the
# root's loader and its RPATH the root's library directories, so the
# binaries run on this host as they are (the loader is their launcher, and
# /proc/self/exe stays the binary itself, which the engine's child processes
# re-execute). Such binaries work as long as the root stays where it is; the
# root is never committed or installed anywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."

cmd=${1:?usage: $0 build|test OUTDIR}
out=${2:?usage: $0 build|test OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
PKG=github.com/kuasar-go/kuasar
REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
BINARIES=(kuasar kuasar-sandboxer containerd-shim-kuasar-v1)
# The packages whose tests need the engine (see `make test-wasmedge`).
read -r -a TEST_PKGS <<<"${WASMEDGE_TEST_PKGS:-./wasm/wasmedge ./cmd/kuasar ./sandboxer/e2e}"

native() {
  pkg-config --exists wasmedge 2>/dev/null || [ -f /usr/include/wasmedge/wasmedge.h ]
}

# go_cmds prints the shell commands that build what $cmd asks for into $2,
# with extra linker flags $1.
go_cmds() {
  local extld=$1 dst=$2 ld="-X $PKG/internal/version.Revision=$REVISION"
  if [ -n "$extld" ]; then ld="$ld -linkmode external -extldflags '$extld'"; fi
  case $cmd in
  build)
    for b in "${BINARIES[@]}"; do
      echo "go build -tags wasmedge -trimpath -ldflags \"$ld\" -o $dst/$b ./cmd/$b"
    done
    # The VMM jail helper links no engine: static, as make build does it.
    echo "CGO_ENABLED=0 go build -trimpath -ldflags \"-X $PKG/internal/version.Revision=$REVISION\" -o $dst/kuasar-vmm-jail ./cmd/kuasar-vmm-jail" ;;
  test)
    for p in "${TEST_PKGS[@]}"; do
      echo "go test -c -tags wasmedge -ldflags \"$ld\" -o $dst/$(basename "$p").test $p"
    done ;;
  *) echo "unknown command $cmd: use build or test" >&2; exit 2 ;;
  esac
}

dst=$out
if [ "$cmd" = test ]; then dst=$out/test; mkdir -p "$dst"; fi

# run_tests runs the test binaries in $dst; $1 is the command line of
# WasmEdge's own CLI.
run_tests() {
  local cli=$1 t=$dst rc=0
  (cd wasm/wasmedge && "$t/wasmedge.test" -test.count=1 -test.timeout 10m) || rc=1
  (cd cmd/kuasar && KUASAR_WASMEDGE_CLI="$cli" "$t/kuasar.test" -test.count=1 -test.timeout 10m -test.run 'WasmEdge') || rc=1
  (cd sandboxer/e2e && KUASAR_TEST_BIN="$out" "$t/e2e.test" -test.count=1 -test.timeout 15m -test.run 'WasmEdge') || rc=1
  return $rc
}

if native; then
  echo "wasmedge: libwasmedge found, building natively" >&2
  eval "$(go_cmds "" "$dst")"
  if [ "$cmd" = test ]; then run_tests "$(command -v wasmedge || true)"; fi
  exit 0
fi

ROOT=$(bash .ci/debian13-root.sh)
GOROOT=$(go env GOROOT)
GOMODCACHE=$(go env GOMODCACHE)
GOCACHE_DIR="${KUASAR_DEBIAN13_CACHE:-$HOME/.cache/kuasar-debian13}/gocache"
mkdir -p "$GOCACHE_DIR"
# Modules come from the host's cache: inside the root the TLS roots differ
# and the build runs with GOPROXY=off.
go mod download
LIBDIRS="$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/lib/x86_64-linux-gnu"
EXTLD="-Wl,--dynamic-linker=$ROOT/usr/lib64/ld-linux-x86-64.so.2 -Wl,-rpath,$LIBDIRS -Wl,--disable-new-dtags"
# The source is mounted at its own path inside the root, so that the paths
# compiled into test binaries (runtime.Caller) hold on the host too.
script="set -e; cd '$PWD'; $(go_cmds "$EXTLD" /out | paste -sd';')"
start=$(date +%s)
mkdir -p "$ROOT$PWD" "$ROOT/out" "$ROOT/goroot" "$ROOT/gomodcache" "$ROOT/gocache"
echo "wasmedge: building in the Debian 13 root $ROOT" >&2
unshare --mount --propagation private env -i \
  ROOTFS="$ROOT" SRC="$PWD" OUT="$dst" GR="$GOROOT" GMC="$GOMODCACHE" GC="$GOCACHE_DIR" SCRIPT="$script" \
  PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -ec '
  mount --bind "$SRC" "$ROOTFS$SRC"
  mount --bind "$OUT" "$ROOTFS/out"
  mount --bind -o ro "$GR" "$ROOTFS/goroot"
  mount --bind -o ro "$GMC" "$ROOTFS/gomodcache"
  mount --bind "$GC" "$ROOTFS/gocache"
  mount -t proc proc "$ROOTFS/proc"
  exec chroot "$ROOTFS" env -i HOME=/root PATH=/goroot/bin:/usr/bin:/bin \
    GOROOT=/goroot GOMODCACHE=/gomodcache GOCACHE=/gocache GOPROXY=off GOFLAGS=-buildvcs=false \
    GOTOOLCHAIN=local CGO_ENABLED=1 sh -ec "$SCRIPT"
'
echo "wasmedge: built in $(( $(date +%s) - start )) s" >&2
if [ "$cmd" = test ]; then
  run_tests "$ROOT/usr/lib64/ld-linux-x86-64.so.2 --library-path $LIBDIRS $ROOT/usr/bin/wasmedge"
fi
