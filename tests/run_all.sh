#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs missing packages, then builds
# and tests twice: a release build (warnings are errors) running every test, and an
# AddressSanitizer + UndefinedBehaviorSanitizer build running every test.
#
#   bash tests/run_all.sh            # everything
#   KV_SKIP_ASAN=1 bash tests/run_all.sh   # release build only (faster local iteration)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../deploy/setup-deps.sh
source "$root/deploy/setup-deps.sh"

start=$(date +%s)
kv_install_deps

stage() { echo; echo "=== $* ($(( $(date +%s) - start ))s) ==="; }

stage "release build"
kv_build release
stage "release tests"
ctest --preset release

if [ "${KV_SKIP_ASAN:-0}" != "1" ]; then
  stage "asan+ubsan build"
  kv_build asan
  stage "asan+ubsan tests"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --preset asan
fi
stage "all tests passed"
