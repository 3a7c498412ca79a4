#!/bin/sh
# Entrypoint of the kvstore image: starts kvnode with settings from the environment and flags.
#
#   docker run kvstore:dev [--flag=value ...]      kvnode with these flags (after those from env)
#   docker run kvstore:dev kvnode [--flag=value]   the same
#   docker run kvstore:dev kvctl get greeting      any other command runs as given
#
# Every environment variable KVNODE_<NAME>=value becomes the kvnode flag --<name>=value (name
# lower-cased), e.g. KVNODE_NODE_ID=n1 -> --node_id=n1, KVNODE_SYNC_WRITES=true ->
# --sync_writes=true, KVNODE_CONFIG=/etc/kvnode/kvnode.conf -> --config=... (kvnode --help lists
# every setting; unknown ones stop it with exit code 2). A flag on the command line wins over the
# variable of the same name. The image sets KVNODE_LISTEN=0.0.0.0:7700 and
# KVNODE_DATA_DIR=/var/lib/kv/data (the volume).
#
# StatefulSet mode (Kubernetes), when KV_PEER_COUNT is set and KVNODE_NODE_ID/KVNODE_PEERS are not:
# the node id is the pod name ($POD_NAME, else the hostname), e.g. kvnode-2, and the peer list
# has one member per ordinal 0..KV_PEER_COUNT-1 of the same StatefulSet:
#   kvnode-0=kvnode-0.<KV_PEER_DOMAIN>:<KV_PEER_PORT>,kvnode-1=...
# KV_PEER_DOMAIN is the headless service's domain (e.g. kvnode.default.svc.cluster.local),
# KV_PEER_PORT defaults to 7700.
# KV_ENTRYPOINT_PRINT=1 prints the command (one argument per line) instead of running it.
set -eu

kvnode_bin="${KV_NODE_BINARY:-kvnode}"

case "${1:-}" in
  kvnode) shift ;;
  "" | -*) ;;
  *) exec "$@" ;;
esac

fail() {
  echo "kv-entrypoint: $*" >&2
  exit 2
}

# has_flag NAME ARGS...: whether ARGS set --NAME (as --NAME=V, --NAME V or a bare --NAME).
has_flag() {
  name="$1"
  shift
  for arg in "$@"; do
    case "$arg" in
      --"$name" | --"$name"=* | -"$name" | -"$name"=*) return 0 ;;
    esac
  done
  return 1
}

if [ -n "${KV_PEER_COUNT:-}" ]; then
  # shellcheck disable=SC3028  # Docker and Kubernetes set HOSTNAME
  pod="${POD_NAME:-${HOSTNAME:-$(cat /proc/sys/kernel/hostname)}}"
  ordinal="${pod##*-}"
  set_name="${pod%-*}"
  case "$ordinal" in
    "" | *[!0-9]*) fail "pod name \"$pod\" does not end in -<ordinal> (StatefulSet mode, KV_PEER_COUNT=$KV_PEER_COUNT)" ;;
  esac
  case "$KV_PEER_COUNT" in
    "" | *[!0-9]*) fail "KV_PEER_COUNT must be a number, got \"$KV_PEER_COUNT\"" ;;
  esac
  [ "$set_name" != "$pod" ] || fail "pod name \"$pod\" has no StatefulSet prefix"
  [ "$ordinal" -lt "$KV_PEER_COUNT" ] ||
    fail "pod $pod has ordinal $ordinal but KV_PEER_COUNT is $KV_PEER_COUNT: scale the StatefulSet and KV_PEER_COUNT together"
  [ -n "${KV_PEER_DOMAIN:-}" ] || fail "KV_PEER_DOMAIN (the headless service's DNS domain) is not set"
  if [ -z "${KVNODE_NODE_ID:-}" ]; then
    KVNODE_NODE_ID="$pod"
    export KVNODE_NODE_ID
  fi
  if [ -z "${KVNODE_PEERS:-}" ]; then
    peers=""
    i=0
    while [ "$i" -lt "$KV_PEER_COUNT" ]; do
      peers="${peers:+$peers,}$set_name-$i=$set_name-$i.$KV_PEER_DOMAIN:${KV_PEER_PORT:-7700}"
      i=$((i + 1))
    done
    KVNODE_PEERS="$peers"
    export KVNODE_PEERS
  fi
fi

# KVNODE_* variables -> flags, in a stable order, skipping those given on the command line.
# A settings name is [A-Z0-9_], so the eval below only ever reads a variable.
env_flags=""
for var in $(env | sed -n 's/^KVNODE_\([A-Z0-9_]*\)=.*/\1/p' | LC_ALL=C sort -u); do
  name="$(echo "$var" | tr '[:upper:]' '[:lower:]')"
  has_flag "$name" "$@" && continue
  env_flags="$env_flags $var"
done

# Rebuild "$@" as: env flags first, then the command-line flags.
n_cli=$#
for var in $env_flags; do
  name="$(echo "$var" | tr '[:upper:]' '[:lower:]')"
  value=""
  eval "value=\${KVNODE_$var}"
  set -- "$@" "--$name=$value"
done
# Rotate the command-line flags behind the env flags.
i=0
while [ "$i" -lt "$n_cli" ]; do
  arg="$1"
  shift
  set -- "$@" "$arg"
  i=$((i + 1))
done

if [ "${KV_ENTRYPOINT_PRINT:-0}" = "1" ]; then
  printf '%s\n' "$kvnode_bin" "$@"
  exit 0
fi
exec "$kvnode_bin" "$@"
