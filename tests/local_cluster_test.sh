#!/usr/bin/env bash
# The README's run command (deploy/local-cluster.sh) with this build's binaries (KV_BIN_DIR):
# a detached 3-node cluster serves a put and a get on every node; a second cluster on the same
# ports is refused with a message naming the port (before, its nodes failed while the script
# reported the first cluster's answers as its own); and a Ctrl-C, a SIGINT to the script's
# whole process group as a terminal sends it, stops every node cleanly (before, the nodes got
# the SIGINT and the script's SIGTERM, and exited on the second signal without closing storage).
#
#   local_cluster_test.sh BUILD_DIR [BASE_PORT]
# Without BASE_PORT it uses three consecutive ports that were free when it started (so that two
# builds' runs, or another test, never collide on fixed ones).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$1"
base_port="${2:-}"
if [ -z "$base_port" ]; then
  base_port="$(python3 -c '
import random, socket
for _ in range(200):
    base = random.randrange(10000, 30000)  # below the ephemeral ports (from 32768)
    socks = []
    try:
        for p in range(base, base + 3):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    break
else:
    raise SystemExit("no three consecutive free ports")
')"
fi
work="$(mktemp -d /tmp/kv-local-cluster-test.XXXXXX)"
kvctl="$build/client/kvctl"
endpoints="127.0.0.1:$base_port,127.0.0.1:$((base_port + 1)),127.0.0.1:$((base_port + 2))"

cleanup() {
  # Every node this test started, by the pid files the script writes.
  for f in "$work"/*/n*.pid; do
    [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
  done
  [ -n "${script_pid:-}" ] && kill -KILL -- "-$script_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

run_script() {  # $1: data dir; the rest: more environment
  local dir="$1"
  shift
  env KV_BIN_DIR="$build" KV_BASE_PORT="$base_port" KV_METRICS_BASE_PORT=0 KV_DATA_DIR="$dir" \
    "$@" bash "$root/deploy/local-cluster.sh"
}

# 1. Detached: every node serves.
run_script "$work/a" KV_DETACH=1 >"$work/a.out" 2>&1 || { cat "$work/a.out"; fail "start"; }
grep -q "The store is running: 3 node(s) on $endpoints" "$work/a.out" || fail "no banner"
"$kvctl" --endpoints="127.0.0.1:$base_port" put greeting hello >/dev/null || fail "put"
for p in 0 1 2; do
  got="$("$kvctl" --endpoints="127.0.0.1:$((base_port + p))" get greeting | head -1)"
  [ "$got" = "value: hello" ] || fail "get on node $p printed '$got'"
done

# 2. A second cluster on the same ports is refused, and the first one keeps serving.
if run_script "$work/b" KV_DETACH=1 >"$work/b.out" 2>&1; then
  cat "$work/b.out"
  fail "a second cluster on ports in use started"
fi
grep -q "port $base_port on 127.0.0.1 is already in use" "$work/b.out" || { cat "$work/b.out"; fail "no port message"; }
[ ! -e "$work/b/n1.pid" ] || fail "the refused cluster started a node"
"$kvctl" --endpoints="127.0.0.1:$base_port" get greeting >/dev/null || fail "first cluster hurt"
kill -TERM $(cat "$work"/a/n*.pid)
for _ in $(seq 1 100); do
  alive=0
  for f in "$work"/a/n*.pid; do kill -0 "$(cat "$f")" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.1
done
[ "$alive" = 0 ] || fail "nodes of the first cluster did not stop on SIGTERM"

# 3. In the foreground, a Ctrl-C (SIGINT to the process group) stops every node cleanly. The
# script runs as the leader of a new process group with SIGINT at its default, as a shell
# starts a foreground job (a background job of this script would ignore SIGINT).
python3 - "$work/c.out" <<PY &
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.setpgid(0, 0)
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
os.dup2(out, 1)
os.dup2(out, 2)
os.environ.update(KV_BIN_DIR="$build", KV_BASE_PORT="$base_port", KV_METRICS_BASE_PORT="0",
                  KV_DATA_DIR="$work/c")
os.execvp("bash", ["bash", "$root/deploy/local-cluster.sh"])
PY
script_pid=$!
for _ in $(seq 1 300); do
  grep -q "Press Ctrl-C to stop." "$work/c.out" 2>/dev/null && break
  sleep 0.1
done
grep -q "Press Ctrl-C to stop." "$work/c.out" || { cat "$work/c.out"; fail "foreground start"; }
c_pids="$(cat "$work"/c/n*.pid)"
kill -INT -- "-$script_pid"
wait "$script_pid" || true
for i in 1 2 3; do
  grep -q "kvnode stopped cleanly" "$work/c/n$i.log" || { cat "$work/c/n$i.log"; fail "n$i did not stop cleanly"; }
done
for pid in $c_pids; do ! kill -0 "$pid" 2>/dev/null || fail "node $pid still runs"; done
[ -z "$(ls "$work"/c/n*.pid 2>/dev/null)" ] || fail "pid files left behind"

# 4. A hangup (the terminal closed) while the nodes are still starting stops those started.
setsid env KV_BIN_DIR="$build" KV_BASE_PORT="$base_port" KV_METRICS_BASE_PORT=0 \
  KV_DATA_DIR="$work/d" bash "$root/deploy/local-cluster.sh" >"$work/d.out" 2>&1 &
script_pid=$!
for _ in $(seq 1 300); do
  [ -s "$work/d/n3.pid" ] && break
  sleep 0.01
done
[ -s "$work/d/n3.pid" ] || { cat "$work/d.out"; fail "hangup start"; }
d_pids="$(cat "$work"/d/n*.pid)"
kill -HUP "$script_pid"
wait "$script_pid" || true
for _ in $(seq 1 100); do
  alive=0
  for pid in $d_pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.1
done
[ "$alive" = 0 ] || { cat "$work/d.out"; fail "nodes outlived a hangup of the script"; }
echo "PASS"
