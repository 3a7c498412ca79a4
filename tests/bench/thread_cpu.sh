#!/usr/bin/env bash
# Where the CPU of a Put run goes, per thread: starts fresh nodes, runs kvbench (Put, 64
# outstanding, 100-byte values, 10 s) and, from the 4th to the 7th second, reads the CPU time of
# every thread of each kvnode and of kvbench from /proc. Prints each process's threads grouped
# by name (busy % of one core, total and per thread) and kvbench's throughput. This is how the
# README's "Where the time goes" found that one node stays at about one core.
#
# Not a test: it asserts nothing. Run it from the repository root after a release build; it
# starts and stops its own nodes (by pid) and deletes their data.
#
#   bash tests/bench/thread_cpu.sh            # 1 node
#   KV_NODES=3 bash tests/bench/thread_cpu.sh # a 3-node cluster (N=3, W=2, R=1)
#
# Environment: KV_NODES (1), KV_BENCH_FLAGS (extra kvbench flags), KV_BASE_PORT (17840),
# KV_BIN_DIR (build/release).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${KV_BIN_DIR:-$root/build/release}"
# shellcheck disable=SC2034  # read by bench_cluster.sh
base_port="${KV_BASE_PORT:-17840}"
out="$(mktemp -d /tmp/kv-threads.XXXXXX)"

# shellcheck source=bench_cluster.sh
source "$root/tests/bench/bench_cluster.sh"
trap 'stop_nodes; rm -rf "$out"' EXIT

start_nodes "${KV_NODES:-1}"
# shellcheck disable=SC2086  # KV_BENCH_FLAGS is a list of flags
"$bin/client/kvbench" --endpoints="$ENDPOINTS" --concurrency=64 --value_size=100 --keys=10000 \
  --duration=10s --warmup=0s --workload=put ${KV_BENCH_FLAGS:-} --json >"$out/bench.json" \
  2>/dev/null &
bench_pid=$!

snapshot() {  # pid comm tid ticks, for every thread of the given processes
  local p t
  for p in "$@"; do
    for t in /proc/"$p"/task/*; do
      echo "$p $(tr ' ' _ <"$t/comm") ${t##*/} $(awk '{print $14 + $15}' "$t/stat")"
    done
  done
}
sleep 4
# shellcheck disable=SC2154  # pids: set by start_nodes (bench_cluster.sh)
snapshot "${pids[@]}" "$bench_pid" >"$out/before"
sleep 3
snapshot "${pids[@]}" "$bench_pid" >"$out/after"
wait "$bench_pid"

python3 - "$out" "$(getconf CLK_TCK)" "$bench_pid" <<'PY'
import json, sys
out, tick, bench = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(name):
    return {tuple(line.split()[:3]): int(line.split()[3]) for line in open(f"{out}/{name}")}
before, after = load("before"), load("after")
groups = {}
for key, ticks in after.items():
    busy = 100.0 * (ticks - before.get(key, ticks)) / tick / 3
    groups.setdefault((key[0], key[1]), []).append(busy)
for (pid, comm), busy in sorted(groups.items()):
    if sum(busy) < 1:
        continue
    who = "kvbench" if pid == bench else f"kvnode {pid}"
    per = ", ".join(f"{b:.0f}" for b in sorted(busy, reverse=True) if b >= 0.5)
    threads = f"{len(busy)} thread" + ("s" if len(busy) > 1 else "")
    print(f"{who:>14} {comm:<16} {sum(busy):5.0f}%  ({threads}: {per})")
r = json.load(open(f"{out}/bench.json"))
print(f"kvbench: {r['ops_per_sec']:.0f} Put/s, p50 {r['p50_us'] / 1000:.2f} ms, "
      f"p99 {r['p99_us'] / 1000:.2f} ms")
PY
