#!/bin/bash
# Installs the kvclient component of a build to a temporary prefix, then configures, builds and
# runs tests/find_package (a consumer using find_package(kvclient) and kv::client) against it.
# Usage: find_package_test.sh CMAKE BUILD_DIR CONSUMER_SOURCE_DIR CXX_COMPILER [EXTRA_CXX_FLAGS]
set -euo pipefail

if [[ $# -lt 4 ]]; then
  echo "usage: $0 CMAKE BUILD_DIR CONSUMER_SOURCE_DIR CXX_COMPILER [EXTRA_CXX_FLAGS]" >&2
  exit 2
fi
cmake_bin=$1
build_dir=$2
consumer_dir=$3
cxx=$4
extra_flags=${5:-}

work=$(mktemp -d "${TMPDIR:-/tmp}/kv_find_package.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== installing the kvclient component of $build_dir to $work/prefix"
if ! "$cmake_bin" --install "$build_dir" --component kvclient --prefix "$work/prefix"; then
  echo "install failed: build the kv_client target first (cmake --build $build_dir)" >&2
  exit 1
fi

generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
echo "== configuring the consumer"
"$cmake_bin" -S "$consumer_dir" -B "$work/build" "${generator[@]}" \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_CXX_FLAGS="$extra_flags" -DCMAKE_EXE_LINKER_FLAGS="$extra_flags"
echo "== building the consumer"
"$cmake_bin" --build "$work/build"
echo "== running the consumer"
"$work/build/kvclient_consumer"
