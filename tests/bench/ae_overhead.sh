#!/usr/bin/env bash
# Measures the steady-state cost of Merkle anti-entropy: a fresh 3-node cluster on loopback
# (N=3, W=2) per run, kvbench --workload=put and --workload=a against it, with anti-entropy off
# (--anti_entropy_interval=0) and on at an aggressive interval, alternated ROUNDS times
# (off,on,off,on,...) because a shared 2-core machine is noisy. Prints every run and the median
# ops/s per mode and workload, and the ratio on/off of the medians.
#
# Not a test: it asserts nothing about timing. Run it from the repository root after a release
# build; it starts and stops its own nodes (by pid) and deletes their data.
#
#   bash tests/bench/ae_overhead.sh                      # defaults below
#   KV_AE_ROUNDS=5 KV_AE_INTERVAL=1s KV_AE_DURATION=10s bash tests/bench/ae_overhead.sh
#
# Environment: KV_AE_ROUNDS (3), KV_AE_INTERVAL (1s), KV_AE_DURATION (10s), KV_AE_BASE_PORT
# (17710), KV_AE_WORKLOADS ("put a"), KV_AE_EXTRA_FLAGS (added to every node), KV_BIN_DIR
# (build/release), KV_AE_OUT (a directory for the JSON reports; a temporary one by default).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${KV_BIN_DIR:-$root/build/release}"
rounds="${KV_AE_ROUNDS:-3}"
interval="${KV_AE_INTERVAL:-1s}"
duration="${KV_AE_DURATION:-10s}"
base_port="${KV_AE_BASE_PORT:-17710}"
workloads="${KV_AE_WORKLOADS:-put a}"
out="${KV_AE_OUT:-$(mktemp -d /tmp/kv-ae-overhead.XXXXXX)}"
mkdir -p "$out"

# shellcheck source=bench_cluster.sh
source "$root/tests/bench/bench_cluster.sh"
trap stop_nodes EXIT

for round in $(seq 1 "$rounds"); do
  for mode in off on; do
    ae=0
    [ "$mode" = on ] && ae="$interval"
    # shellcheck disable=SC2086
    start_nodes 3 --anti_entropy_interval="$ae" ${KV_AE_EXTRA_FLAGS:-}
    for w in $workloads; do
      report="$out/$w-$mode-$round.json"
      "$bin/client/kvbench" --endpoints="$ENDPOINTS" --workload="$w" --concurrency=64 \
        --value_size=100 --keys=10000 --duration="$duration" --json >"$report" 2>/dev/null
      ops=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["ops_per_sec"]))' "$report")
      echo "round $round  anti-entropy $mode  workload $w: $ops ops/s"
    done
    if [ "$mode" = on ]; then
      # What anti-entropy did during the runs, as n1 saw it (exchanges, keys found different).
      "$bin/client/kvctl" --endpoints="${ENDPOINTS%%,*}" --json cluster anti-entropy \
        >"$out/anti-entropy-$round.json" 2>/dev/null || true
    fi
    stop_nodes
  done
done

python3 - "$out" "$workloads" <<'PY'
import glob, json, os, statistics, sys
out, workloads = sys.argv[1], sys.argv[2].split()
for w in workloads:
    med = {}
    for mode in ("off", "on"):
        runs = [json.load(open(p))["ops_per_sec"] for p in sorted(glob.glob(os.path.join(out, f"{w}-{mode}-*.json")))]
        med[mode] = statistics.median(runs)
        print(f"{w:>4} anti-entropy {mode:>3}: runs {', '.join(str(round(r)) for r in runs)}; median {med[mode]:.0f} ops/s")
    print(f"{w:>4} ratio on/off of the medians: {med['on'] / med['off']:.3f}")
for p in sorted(glob.glob(os.path.join(out, "anti-entropy-*.json"))):
    try:
        ae = json.load(open(p))
    except ValueError:
        continue
    for peer in ae.get("peers", []):
        print(f"{os.path.basename(p)}: n1 with {peer['peer_id']}: {peer['exchanges']} exchanges, "
              f"{peer['failed_exchanges']} failed, keys repaired {peer['keys_repaired']}, "
              f"last exchange took {peer['last_exchange_duration_us'] / 1000:.1f} ms and found "
              f"{peer['last_keys_different']} keys different")
print(f"reports in {out}")
PY
