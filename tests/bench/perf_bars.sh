#!/usr/bin/env bash
# Reproduces the README's performance figures: kvbench against 1 node and against a 3-node
# cluster (N=3, W=2, R=1) on loopback, 100-byte values, 64 outstanding requests, each workload
# as a ratio to the single-node transport ceiling (Admin.Ping through the same client loop, to
# one node: for the cluster, to n1 alone, --ceiling_endpoints) measured in the same run, round
# by round (kvbench --rounds: the ceiling right before each round; the median of
# the rounds' ratios is reported, which a shared, noisy machine needs). Then the replication lag
# at half load: the 3-node Put maximum just measured, halved, as kvbench --rate.
#
# Put runs twice: as the client library sends Puts by default (coalesced into PutBatch calls
# under load) and with one RPC per Put (--put_coalescing=0), each on fresh nodes. Get runs twice
# too: coalesced into GetBatch calls (the default) and with one RPC per Get (--get_coalescing=0).
#
# Not a test: it asserts nothing about timing. Run it from the repository root after a release
# build; it starts and stops its own nodes (by pid) and deletes their data.
#
#   bash tests/bench/perf_bars.sh
#   KV_PERF_ROUNDS=5 KV_PERF_DURATION=10s bash tests/bench/perf_bars.sh
#
# Environment: KV_PERF_ROUNDS (5), KV_PERF_DURATION (10s, split across the rounds),
# KV_PERF_BASE_PORT (17810), KV_BIN_DIR (build/release), KV_PERF_OUT (a directory for the JSON
# reports; a temporary one by default).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${KV_BIN_DIR:-$root/build/release}"
rounds="${KV_PERF_ROUNDS:-5}"
duration="${KV_PERF_DURATION:-10s}"
base_port="${KV_PERF_BASE_PORT:-17810}"
out="${KV_PERF_OUT:-$(mktemp -d /tmp/kv-perf.XXXXXX)}"
mkdir -p "$out"

# shellcheck source=bench_cluster.sh
source "$root/tests/bench/bench_cluster.sh"
trap stop_nodes EXIT

bench() {  # $1: report name; the rest: kvbench flags
  local report="$out/$1.json"
  shift
  "$bin/client/kvbench" --endpoints="$ENDPOINTS" --concurrency=64 --value_size=100 \
    --keys=10000 --duration="$duration" --warmup=0.5s "$@" --json >"$report" 2>/dev/null
  python3 - "$report" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
line = f"{sys.argv[1].rsplit('/', 1)[-1][:-5]:>14}: {r['ops_per_sec']:8.0f} ops/s"
if "ratio_to_ceiling" in r:
    rounds = " ".join(f"{x:.2f}" for x in r["round_ratios"])
    line += (f", ceiling {r['ceiling_ops_per_sec']:.0f} ops/s, ratio {r['ratio_to_ceiling']:.3f}"
             f" (median of rounds: {rounds})")
if "rate_achieved_fraction" in r:
    line += f" ({100 * r['rate_achieved_fraction']:.1f}% of the rate asked)"
if r.get("error_count", 0) or r.get("ceiling_error_count", 0):
    line += f", ERRORS {r.get('error_count', 0)} (ceiling {r.get('ceiling_error_count', 0)})"
# A node's lag window holds its last 49,152-65,536 writes: only a Put run's own writes fill it.
if "replication_lag_p99_us" in r and r.get("workload") == "put":
    line += (f", replication lag p50 {r['replication_lag_p50_us'] / 1000:.1f} ms"
             f" p99 {r['replication_lag_p99_us'] / 1000:.1f} ms")
print(line)
PY
}

start_nodes 1
bench 1-node-put --workload=put --ceiling --rounds="$rounds"
stop_nodes
# The same with one RPC per Put (no coalescing into PutBatch), on a fresh node as well.
start_nodes 1
bench 1-node-put-single --workload=put --ceiling --rounds="$rounds" --put_coalescing=0
bench 1-node-get --workload=c --ceiling --rounds="$rounds"
bench 1-node-get-single --workload=c --ceiling --rounds="$rounds" --get_coalescing=0
stop_nodes

start_nodes 3
single="127.0.0.1:$base_port"  # n1: the cluster's ratios are to a single node's ceiling
bench 3-node-put --workload=put --ceiling --ceiling_endpoints="$single" --rounds="$rounds"
stop_nodes
start_nodes 3
bench 3-node-put-single --workload=put --ceiling --ceiling_endpoints="$single" \
  --rounds="$rounds" --put_coalescing=0
bench 3-node-get --workload=c --ceiling --ceiling_endpoints="$single" --rounds="$rounds"
bench 3-node-get-single --workload=c --ceiling --ceiling_endpoints="$single" --rounds="$rounds" \
  --get_coalescing=0
stop_nodes

# Half load: half the 3-node Put maximum, on a fresh cluster so that the nodes' lag windows
# hold only these writes.
half=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["ops_per_sec"] / 2))' \
  "$out/3-node-put.json")
start_nodes 3
bench 3-node-put-half --workload=put --rate="$half"
stop_nodes
echo "reports in $out"
