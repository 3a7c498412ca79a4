#!/usr/bin/env bash
# Runs the store locally on 127.0.0.1, no Docker needed: installs missing Debian packages,
# builds the release binaries (incrementally: nothing to do when they are up to date), starts the
# nodes with their data under .kv-local/, prints how to use kvctl, and stops the nodes cleanly
# (SIGTERM) on Ctrl-C. It refuses to start when one of its ports is already in use (another
# cluster running: stop it, or give this one other ports with KV_BASE_PORT).
#
#   bash deploy/local-cluster.sh
# Node i serves gRPC on KV_BASE_PORT+i-1 and Prometheus metrics on http://127.0.0.1:
# KV_METRICS_BASE_PORT+i-1/metrics.
# Environment: KV_NODES (default 3), KV_BASE_PORT (default 7700), KV_METRICS_BASE_PORT (default
# KV_BASE_PORT+100; 0 for no metrics servers), KV_DATA_DIR (default
# .kv-local in the repository), KV_DETACH=1 to leave the nodes running in the background,
# KV_EXTRA_FLAGS for more kvnode flags (e.g. --sync_writes or --fault_replication_delay=2s),
# KV_BIN_DIR to run binaries built elsewhere (a build directory holding node/kvnode and
# client/kvctl; then nothing is installed or built).
# Every node gets the same --peers list; keys have N=min(3, nodes) replicas, W=2, R=1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=setup-deps.sh
source "$root/deploy/setup-deps.sh"

nodes="${KV_NODES:-3}"
base_port="${KV_BASE_PORT:-7700}"
metrics_base_port="${KV_METRICS_BASE_PORT:-$((base_port + 100))}"
data_dir="${KV_DATA_DIR:-$root/.kv-local}"

if [ -n "${KV_BIN_DIR:-}" ]; then
  bin="$KV_BIN_DIR"
else
  kv_install_deps
  kv_build release kvnode kvctl kvbench
  bin="$root/build/release"
fi
mkdir -p "$data_dir"

endpoints=""
peers=""
for i in $(seq 1 "$nodes"); do
  port=$((base_port + i - 1))
  endpoints="${endpoints:+$endpoints,}127.0.0.1:$port"
  peers="${peers:+$peers,}n$i=127.0.0.1:$port"
done
replication=3
[ "$nodes" -lt 3 ] && replication="$nodes"
write_quorum=2
[ "$replication" -lt 2 ] && write_quorum=1

# True if something accepts connections on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for i in $(seq 1 "$nodes"); do
  for port in $((base_port + i - 1)) $([ "$metrics_base_port" != 0 ] && echo $((metrics_base_port + i - 1))); do
    if port_in_use "$port"; then
      echo "port $port on 127.0.0.1 is already in use (another cluster running? stop it, or" \
        "choose other ports with KV_BASE_PORT and KV_METRICS_BASE_PORT)" >&2
      exit 1
    fi
  done
done

pids=()
stop() {
  echo "stopping nodes (pids ${pids[*]})" >&2
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  rm -f "$data_dir"/n*.pid
}
# From the first launch on, Ctrl-C, a closed terminal (HUP) or a kill stops the nodes started so
# far (they run in sessions of their own, so nothing else would).
trap 'stop; exit 130' INT TERM HUP
for i in $(seq 1 "$nodes"); do
  port=$((base_port + i - 1))
  metrics_flag=""
  if [ "$metrics_base_port" != 0 ]; then
    metrics_flag="--metrics_listen=127.0.0.1:$((metrics_base_port + i - 1))"
  fi
  # In a session of its own: a terminal's Ctrl-C reaches this script only, which then stops the
  # nodes with one SIGTERM each (a node that got both would take the second signal as "exit now").
  setsid "$bin/node/kvnode" --node_id="n$i" --listen="127.0.0.1:$port" --data_dir="$data_dir/n$i" \
    --peers="$peers" --replication_factor="$replication" --write_quorum="$write_quorum" \
    $metrics_flag ${KV_EXTRA_FLAGS:-} >"$data_dir/n$i.log" 2>&1 &
  pids+=($!)
  echo "$!" >"$data_dir/n$i.pid"
done

# Ready when every node answers a List (exit 0) through kvctl and is still running (the answer
# is then its own).
for i in $(seq 1 "$nodes"); do
  port=$((base_port + i - 1))
  ready=0
  for _ in $(seq 1 100); do
    if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then break; fi
    if "$bin/client/kvctl" --endpoints="127.0.0.1:$port" --timeout=1s list --limit=1 \
        >/dev/null 2>&1 && kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
      ready=1
      break
    fi
    sleep 0.1
  done
  if [ "$ready" != 1 ]; then
    echo "node n$i failed to start; its log ($data_dir/n$i.log):" >&2
    cat "$data_dir/n$i.log" >&2
    stop
    exit 1
  fi
done

cat <<MSG

The store is running: $nodes node(s) on $endpoints, data in $data_dir.
Use it from another terminal:

  export KV_ENDPOINTS=$endpoints
  $bin/client/kvctl put greeting "hello world"
  $bin/client/kvctl get greeting
  $bin/client/kvctl list
  $bin/client/kvctl describe-key greeting
  $bin/client/kvctl cluster status
  $bin/client/kvbench --workload=b --duration=5s --ceiling

Logs: $data_dir/n*.log
MSG
if [ "$metrics_base_port" != 0 ]; then
  echo "Metrics (Prometheus): http://127.0.0.1:$metrics_base_port/metrics .. port $((metrics_base_port + nodes - 1))"
fi

if [ "${KV_DETACH:-0}" = "1" ]; then
  trap - INT TERM HUP  # the nodes outlive this script
  echo "Detached; stop with: kill \$(cat $data_dir/n*.pid)"
  exit 0
fi
echo "Press Ctrl-C to stop."
trap 'stop; exit 0' INT TERM HUP
wait "${pids[@]}"
