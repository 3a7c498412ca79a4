# Sourced by the scripts in tests/bench: starts and stops a loopback cluster of kvnode processes
# for a measurement. Needs `bin` (the build directory) and `base_port` set by the caller.
#
#   start_nodes N [kvnode flags...]  starts n1..nN on 127.0.0.1:base_port.., every node with the
#                                    same --peers and the flags, in a fresh temporary data
#                                    directory; waits until each serves; sets ENDPOINTS.
#   start_joiner ID INDEX [flags...] starts one more node with --seeds (waits to be joined).
#   stop_nodes                       SIGTERM to every node (by pid), waits, deletes the data.
# The caller should `trap stop_nodes EXIT`.

pids=()
data=""

stop_nodes() {
  if [ "${#pids[@]}" -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  pids=()
  if [ -n "$data" ]; then rm -rf "$data"; fi
  data=""
}

start_nodes() {
  local n="$1" peers="" endpoints=""
  shift
  data="$(mktemp -d /tmp/kv-bench-data.XXXXXX)"
  for i in $(seq 1 "$n"); do
    peers="${peers:+$peers,}n$i=127.0.0.1:$((base_port + i - 1))"
    endpoints="${endpoints:+$endpoints,}127.0.0.1:$((base_port + i - 1))"
  done
  for i in $(seq 1 "$n"); do
    "$bin/node/kvnode" --node_id="n$i" --listen="127.0.0.1:$((base_port + i - 1))" \
      --data_dir="$data/n$i" --peers="$peers" "$@" >"$data/n$i.log" 2>&1 &
    pids+=($!)
  done
  for i in $(seq 1 "$n"); do
    local ok=0
    for _ in $(seq 1 200); do
      if "$bin/client/kvctl" --endpoints="127.0.0.1:$((base_port + i - 1))" --timeout=1s \
          list --limit=1 >/dev/null 2>&1; then ok=1; break; fi
      sleep 0.1
    done
    if [ "$ok" != 1 ]; then echo "node n$i did not start:" >&2; cat "$data/n$i.log" >&2; exit 1; fi
  done
  ENDPOINTS="$endpoints"
}

# start_joiner ID INDEX [kvnode flags...]: starts node ID on 127.0.0.1:base_port+INDEX with
# --seeds=the first node and no --peers (it waits to be joined), in the same data directory
# as start_nodes; waits until it serves.
start_joiner() {
  local id="$1" port=$((base_port + $2))
  shift 2
  "$bin/node/kvnode" --node_id="$id" --listen="127.0.0.1:$port" --data_dir="$data/$id" \
    --seeds="127.0.0.1:$base_port" "$@" >"$data/$id.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do
    if "$bin/client/kvctl" --endpoints="127.0.0.1:$port" --timeout=1s \
        list --limit=1 >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "node $id did not start:" >&2
  cat "$data/$id.log" >&2
  exit 1
}
