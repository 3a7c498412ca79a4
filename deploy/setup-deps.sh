#!/usr/bin/env bash
# Installs the Debian packages the store needs to build and test, if any are missing, and
# builds a CMake preset. Sourced by deploy/local-cluster.sh and tests/run_all.sh.
#   kv_install_deps            apt-get installs what is missing (as root, non-interactive)
#   kv_build PRESET [TARGETS]  configures and builds build/PRESET
set -euo pipefail

KV_DEB_PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev libabsl-dev libgtest-dev libgmock-dev libxxhash-dev nlohmann-json3-dev
  prometheus-cpp-dev libgoogle-perftools-dev
  util-linux procps python3 python3-yaml openssl faketime
)

kv_install_deps() {
  local missing=()
  for pkg in "${KV_DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  echo "setup: installing missing Debian packages: ${missing[*]}" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo"
    else
      echo "setup: not root and no sudo; install these packages first: ${missing[*]}" >&2
      return 1
    fi
  fi
  # Waits for a dpkg lock held by apt's daily jobs on a freshly booted machine.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}"
}

kv_build() {
  local preset="$1"
  shift
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  # ccache hits across clones and build directories.
  export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
  (cd "$root" && cmake --preset "$preset" >/dev/null)
  if [ $# -gt 0 ]; then
    cmake --build "$root/build/$preset" --target "$@"
  else
    cmake --build "$root/build/$preset"
  fi
}
