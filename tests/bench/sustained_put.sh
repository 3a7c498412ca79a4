#!/usr/bin/env bash
# Sustained Put load on fresh nodes (one by default; KV_SUSTAIN_NODES=3 for a cluster with
# N=3, W=2): kvbench writes tokened Puts (100-byte values, 64
# outstanding, 10,000 keys) for KV_SUSTAIN_DURATION (120s by default), and this prints the
# throughput of each 10-second window and the last window's ratio to the first, measured in
# the same run. perf_bars.sh measures 10 s on a fresh node; this shows what the store does once
# its idempotency column and records have grown (every tokened write adds a token record, kept
# for idempotency_ttl, a day by default).
#
# Not a test: it asserts nothing about timing. Run it from the repository root after a release
# build; it starts and stops its own nodes (by pid) and deletes their data.
#
#   bash tests/bench/sustained_put.sh
#   KV_SUSTAIN_DURATION=300s bash tests/bench/sustained_put.sh
#
# Environment: KV_SUSTAIN_DURATION (120s), KV_SUSTAIN_NODES (1), KV_PERF_BASE_PORT (17830),
# KV_BIN_DIR (build/release).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${KV_BIN_DIR:-$root/build/release}"
duration="${KV_SUSTAIN_DURATION:-120s}"
nodes="${KV_SUSTAIN_NODES:-1}"
base_port="${KV_PERF_BASE_PORT:-17830}"

# shellcheck source=bench_cluster.sh
source "$root/tests/bench/bench_cluster.sh"

progress="$(mktemp /tmp/kv-sustain.XXXXXX)"
trap 'stop_nodes; rm -f "$progress"' EXIT
start_nodes "$nodes"
"$bin/client/kvbench" --endpoints="$ENDPOINTS" --workload=put --concurrency=64 --value_size=100 \
  --keys=10000 --duration="$duration" --warmup=0s >/dev/null 2>"$progress"
stop_nodes
python3 - "$progress" <<'PY'
import re, sys
# kvbench's progress lines: "kvbench: workload put: 12s: 15321 ops/s, 16002 ops/s so far, 0 errors"
ticks = [(int(m.group(1)), float(m.group(2)), int(m.group(3))) for m in re.finditer(
    r"workload put: (\d+)s: (\d+(?:\.\d+)?) ops/s, [\d.]+ ops/s so far, (\d+) errors",
    open(sys.argv[1]).read())]
windows = {}
for second, rate, _ in ticks:
    windows.setdefault((second - 1) // 10, []).append(rate)
# A window needs most of its ticks (the last tick of a run can fall after its end).
full = [(w, rates) for w, rates in sorted(windows.items()) if len(rates) >= 8]
if len(full) < 2:
    sys.exit(f"too few progress lines ({len(ticks)}): run at least 20s")
for w, rates in full:
    print(f"{10 * w:4d}-{10 * w + 10:4d}s: {sum(rates) / len(rates):8.0f} ops/s")
first, last = full[0][1], full[-1][1]
print(f"last window / first window: {(sum(last) / len(last)) / (sum(first) / len(first)):.2f}")
errors = ticks[-1][2]
if errors > 0:
    print(f"kvbench counted {errors} failed Puts; the rates above include them")
PY
