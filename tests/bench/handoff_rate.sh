#!/usr/bin/env bash
# Measures how fast a join hands data to the joining node on loopback: a 3-node cluster (N=3,
# no handoff rate limit) is loaded with KV_HANDOFF_KEYS keys of KV_HANDOFF_VALUE_SIZE bytes
# (kvbench preload), a 4th node starts with --seeds, `kvctl cluster join n4 --commit` starts
# the change, and `kvctl operation get` is polled until SUCCEEDED. Prints the distinct data n4
# gained, the seconds from commit to SUCCEEDED (the operation's own start and end times), their
# ratio, and every counter of the operation (records and bytes each source sent).
#
# Distinct data = the plan's moved fraction x N x keys loaded x the mean record size reported by
# the sources: the replica slots that change holder, each counted once however many times it is
# sent. It does not depend on how many sources send a key.
#
# Not a test: it asserts nothing about timing. Run it from the repository root after a release
# build; it starts and stops its own nodes (by pid) and deletes their data.
#
#   bash tests/bench/handoff_rate.sh
#   KV_HANDOFF_KEYS=20000 bash tests/bench/handoff_rate.sh
#
# Environment: KV_HANDOFF_KEYS (40000), KV_HANDOFF_VALUE_SIZE (4096), KV_HANDOFF_BASE_PORT
# (17840), KV_BIN_DIR (build/release), KV_HANDOFF_NODE_FLAGS (extra kvnode flags for every node,
# e.g. --gossip_interval=200ms).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${KV_BIN_DIR:-$root/build/release}"
keys="${KV_HANDOFF_KEYS:-40000}"
value_size="${KV_HANDOFF_VALUE_SIZE:-4096}"
base_port="${KV_HANDOFF_BASE_PORT:-17840}"
# shellcheck disable=SC2206
node_flags=(--handoff_mb_per_second=0 ${KV_HANDOFF_NODE_FLAGS:-})

# shellcheck source=bench_cluster.sh
source "$root/tests/bench/bench_cluster.sh"
trap stop_nodes EXIT

kvctl() { "$bin/client/kvctl" --endpoints="127.0.0.1:$base_port" --json "$@"; }

start_nodes 3 "${node_flags[@]}"
echo "loading $keys keys of $value_size bytes..." >&2
"$bin/client/kvbench" --endpoints="$ENDPOINTS" --workload=c --keys="$keys" \
  --value_size="$value_size" --concurrency=64 --duration=0.1s --warmup=0s --json \
  >"$data/load.json" 2>"$data/load.err" \
  || { echo "kvbench failed:" >&2; cat "$data/load.json" "$data/load.err" >&2; exit 1; }
start_joiner n4 3 "${node_flags[@]}"

# n4 is known to n1 once gossip brought its entry: the plan succeeds from then on.
plan=""
for _ in $(seq 1 100); do
  if plan="$(kvctl cluster join n4 2>/dev/null)"; then break; fi
  plan=""
  sleep 0.2
done
if [ -z "$plan" ]; then echo "n4 never became known to n1" >&2; exit 1; fi
id="$(kvctl cluster join n4 --commit | python3 -c 'import json,sys; print(json.load(sys.stdin)["operation_id"])')"
echo "operation $id committed; waiting for it..." >&2
op=""
for _ in $(seq 1 3000); do
  op="$(kvctl operation get "$id")"
  state="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["state"])' "$op")"
  [ "$state" = RUNNING ] || break
  sleep 0.05
done

python3 - "$plan" "$op" "$keys" <<'PY'
import json, sys
plan, op, keys = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
if op["state"] != "SUCCEEDED":
    sys.exit(f"the join did not succeed: {json.dumps(op)}")
counters = op["counters"]
seconds = (op["end_unix_micros"] - op["start_unix_micros"]) / 1e6
# Mean record size over the full records the sources sent.
sent_keys = sum(v for k, v in counters.items() if k.startswith("keys_from_"))
sent_bytes = sum(v for k, v in counters.items() if k.startswith("bytes_from_"))
record = sent_bytes / max(1, sent_keys)
distinct_keys = plan["moved_fraction"] * 3 * keys
distinct_mb = distinct_keys * record / 1e6
print(f"join of n4: moved fraction {plan['moved_fraction']:.4f}, ~{distinct_keys:.0f} distinct "
      f"records of {record:.0f} bytes = {distinct_mb:.1f} MB distinct")
print(f"commit to SUCCEEDED: {seconds:.2f} s; distinct data {distinct_mb / seconds:.1f} MB/s; "
      f"all full records sent {sent_bytes / 1e6:.1f} MB ({sent_bytes / 1e6 / seconds:.1f} MB/s)")
print(f"  operation {op['start']} to {op['end']}")
for name in sorted(counters):
    print(f"  {name} = {counters[name]}")
PY
# Each source's own account of its phases (the nodes' log lines).
for node in n1 n2 n3; do grep -hE "handoff|layout changed" "$data/$node.log" | sed "s/^/  $node: /" || true; done
