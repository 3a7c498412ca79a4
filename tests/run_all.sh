#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs missing packages, then builds
# and tests twice: a release build (warnings are errors) running every test, then the Docker
# image and the container end-to-end tests, and an AddressSanitizer + UndefinedBehaviorSanitizer
# build running every test.
#
#   bash tests/run_all.sh            # everything
#   KV_SKIP_ASAN=1 bash tests/run_all.sh   # release build only (faster local iteration)
#   KV_SKIP_CONTAINERS=1 bash tests/run_all.sh   # without the Docker image and container tests
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../deploy/setup-deps.sh
source "$root/deploy/setup-deps.sh"

start=$(date +%s)
kv_install_deps

stage() { echo; echo "=== $* ($(( $(date +%s) - start ))s) ==="; }

# Runs `ctest --preset PRESET ARGS...` from the source directory. Tests that fail are run once
# more, alone: one that then passes is reported as FLAKY (in the output, and appended to
# build/flaky-tests.txt); one that fails again fails the run. No flaky test is known (README,
# Tests); a FLAKY line is a bug to look into.
run_ctest() {
  local preset="$1"
  shift
  cd "$root"
  if ctest --preset "$preset" "$@"; then return 0; fi
  local failed
  failed="$(tr '\n' ' ' < "$root/build/$preset/Testing/Temporary/LastTestsFailed.log" 2>/dev/null || true)"
  echo "--- some tests failed ($failed); running them once more ---"
  [ -n "${failed// /}" ] || return 1  # nothing to run again: the failure was not a test's
  ctest --preset "$preset" "$@" --rerun-failed --no-tests=error || return 1
  echo "FLAKY ($preset): failed once, then passed: $failed" | tee -a "$root/build/flaky-tests.txt"
}

stage "release build"
kv_build release
stage "release tests"
(run_ctest release -LE container)

# The containerised cluster under real faults (tests/container_e2e_test.py). deploy/docker-env.sh
# starts a private dockerd when none answers (stopped again right after these tests), creates
# debian:bookworm-slim from the apt mirror when it cannot be pulled, and builds kvstore:dev once
# per source state; the tests reuse that image. Without Docker: a SKIP line, not a failure.
if [ "${KV_SKIP_CONTAINERS:-0}" != "1" ]; then
  stage "container image"
  # shellcheck source=../deploy/docker-env.sh
  source "$root/deploy/docker-env.sh"
  container_rc=0
  kv_docker_prepare || container_rc=$?
  # A daemon this run started for an image that then did not come together stops here.
  if [ "$container_rc" -ne 0 ] && [ "$KV_DOCKER_STARTED" = "1" ]; then kv_docker_daemon_stop; fi
  if [ "$container_rc" -eq 77 ]; then
    echo "SKIP: container tests: Docker cannot be started on this machine (see the reason above)"
  elif [ "$container_rc" -ne 0 ]; then
    echo "the kvstore image did not build" >&2
    exit 1
  else
    [ "$KV_DOCKER_STARTED" = "1" ] && trap 'kv_docker_daemon_stop' EXIT
    stage "container tests"
    ctest --preset release -L container
    if [ "$KV_DOCKER_STARTED" = "1" ]; then
      kv_docker_daemon_stop
      trap - EXIT
    fi
  fi
fi

if [ "${KV_SKIP_ASAN:-0}" != "1" ]; then
  stage "asan+ubsan build"
  kv_build asan
  stage "asan+ubsan tests"
  (
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
    run_ctest asan
  )
fi
stage "all tests passed"
