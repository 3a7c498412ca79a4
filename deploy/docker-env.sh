#!/usr/bin/env bash
# Docker for the containerised cluster and its tests, on a laptop with Docker as on a bare Debian
# machine without a daemon or a registry. It prepares only what is missing:
#   - a daemon: the one that answers ($DOCKER_HOST, the docker context or the default socket),
#     else a private dockerd of its own: socket /run/kv-docker.sock, data /var/lib/kv-docker,
#     exec root /run/kv-docker, pid file /run/kv-docker.pid, log /var/log/kv-dockerd.log; stopped
#     again by the pid in that file (`daemon-stop`), which also removes what it added to the
#     host's firewall and docker0. Starting it needs root.
#   - debian:bookworm-slim: used when present, pulled when a registry answers, else bootstrapped
#     with debootstrap from the apt mirror this machine already uses (read from its apt sources;
#     no mirror or registry host is written in this repository).
#   - the image kvstore:dev (deploy/Dockerfile), rebuilt only when its sources changed (the image
#     carries a hash of them in the label org.kvstore.source-hash); a rebuild removes the untagged
#     images of earlier sources (their build stages stay: they are the layer cache).
# Missing Debian packages (docker.io, debootstrap, docker-compose) are installed with apt-get.
#
# Usage: bash deploy/docker-env.sh COMMAND [ARGS]
#   up             prepare everything, start the compose cluster, wait until every node is healthy
#   down [-v]      stop the cluster (-v also deletes its volumes); then stops the private daemon
#                  if this script started it (KV_KEEP_DAEMON=1 keeps it)
#   kvctl ARGS     run kvctl against the cluster (compose service "kvctl", profile tools)
#   compose ARGS   docker compose (plugin) or docker-compose with this cluster's project and files
#   env            print `export DOCKER_HOST=...` for the daemon in use (eval "$(... env)")
#   prepare        daemon + base image + kvstore:dev; exit 77 when Docker cannot be started
#   daemon-start | daemon-stop | daemon-status | base-image | image
# Environment: KV_NODES=3|5 (compose cluster size), KV_TLS=1 (mutual TLS: deploy/compose.tls.yaml
#   with the certificates in KV_TLS_DIR, default .kv-tls, made by deploy/make-tls-certs.sh when
#   missing; give the same KV_TLS to kvctl, compose and down), KV_COMPOSE_PROJECT (default kvstore),
#   KV_IMAGE (default kvstore:dev), KV_PORT_1..KV_PORT_5 (published ports, default 7700..7704,
#   on 127.0.0.1 only), KV_UP_TIMEOUT (seconds, default 180), KV_DEBIAN_MIRROR (overrides the
#   mirror read from the apt sources for the bootstrap), KV_IMAGE_REUSE=1 (use an existing
#   kvstore:dev even if the sources changed), KV_FORCE_BUILD=1 (rebuild even if unchanged).
# Sourcing it defines the kv_docker_* functions without running a command (the tests do that).
set -euo pipefail

KV_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KV_IMAGE="${KV_IMAGE:-kvstore:dev}"
KV_BASE_IMAGE="debian:bookworm-slim"
KV_DOCKER_SOCK="${KV_DOCKER_SOCK:-/run/kv-docker.sock}"
KV_DOCKER_DATA_ROOT="${KV_DOCKER_DATA_ROOT:-/var/lib/kv-docker}"
KV_DOCKER_EXEC_ROOT="${KV_DOCKER_EXEC_ROOT:-/run/kv-docker}"
KV_DOCKER_PIDFILE="${KV_DOCKER_PIDFILE:-/run/kv-docker.pid}"
KV_DOCKER_LOG="${KV_DOCKER_LOG:-/var/log/kv-dockerd.log}"
# What the host looked like before the private dockerd changed its firewall and bridge.
KV_DOCKER_HOSTSTATE="${KV_DOCKER_HOSTSTATE:-/run/kv-docker.host}"
KV_COMPOSE_PROJECT="${KV_COMPOSE_PROJECT:-kvstore}"

kv_log() { echo "docker-env: $*" >&2; }

kv_as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    kv_log "needs root for: $*"
    return 1
  fi
}

# kv_docker_apt_install PKG...: installs the packages that are missing (non-interactive).
kv_docker_apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || { kv_log "no apt-get to install ${missing[*]}"; return 1; }
  kv_log "installing missing Debian packages: ${missing[*]}"
  kv_as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq ||
    return 1
  kv_as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y \
    -qq --no-install-recommends "${missing[@]}" >/dev/null || return 1
}

kv_docker_answers() { timeout 10 docker version >/dev/null 2>&1; }

kv_docker_private_pid() {
  local pid
  [ -r "$KV_DOCKER_PIDFILE" ] || return 1
  pid="$(cat "$KV_DOCKER_PIDFILE" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && grep -q dockerd "/proc/$pid/comm" 2>/dev/null || return 1
  echo "$pid"
}

# kv_docker_daemon_start: makes `docker` answer, exporting DOCKER_HOST when needed. Sets
# KV_DOCKER_STARTED=1 when this call started the private daemon. Returns 1 (with a reason on
# stderr) when no daemon can be had.
KV_DOCKER_STARTED=0
kv_docker_daemon_start() {
  if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
    if [ -n "${DOCKER_HOST:-}" ] || [ -S /var/run/docker.sock ]; then
      command -v docker >/dev/null 2>&1 || kv_docker_apt_install docker.io || return 1
    else
      kv_docker_apt_install docker.io || { kv_log "cannot install docker.io"; return 1; }
      # Debian's docker.io cannot start a container on a kernel with AppArmor on unless the
      # apparmor package (a recommendation it skips here) can load its profile.
      if [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ]; then
        kv_docker_apt_install apparmor || { kv_log "cannot install apparmor"; return 1; }
      fi
    fi
  fi
  local started_pid=""  # of the dockerd started here, if any
  # The daemon of the current environment ($DOCKER_HOST, the docker context, the default socket).
  if kv_docker_answers; then return 0; fi
  export DOCKER_HOST="unix://$KV_DOCKER_SOCK"
  if kv_docker_answers; then return 0; fi
  if [ -S "$KV_DOCKER_SOCK" ] && [ ! -w "$KV_DOCKER_SOCK" ]; then
    kv_log "a private dockerd runs on $KV_DOCKER_SOCK but this user may not use its socket"
    return 1
  fi
  if kv_docker_private_pid >/dev/null; then
    kv_log "private dockerd (pid $(kv_docker_private_pid)) does not answer yet; waiting"
  else
    if [ "$(id -u)" -ne 0 ]; then
      kv_log "no Docker daemon answers and starting one needs root"
      return 1
    fi
    command -v dockerd >/dev/null 2>&1 || { kv_log "no dockerd binary"; return 1; }
    mkdir -p "$KV_DOCKER_DATA_ROOT" "$KV_DOCKER_EXEC_ROOT" "$(dirname "$KV_DOCKER_LOG")"
    kv_docker_save_host
    kv_log "starting a private dockerd on $KV_DOCKER_SOCK (data $KV_DOCKER_DATA_ROOT, log $KV_DOCKER_LOG)"
    # setsid: the daemon outlives this script and is not hit by a Ctrl-C in the caller's terminal.
    setsid dockerd --host "unix://$KV_DOCKER_SOCK" --data-root "$KV_DOCKER_DATA_ROOT" \
      --exec-root "$KV_DOCKER_EXEC_ROOT" --pidfile "$KV_DOCKER_PIDFILE" \
      >>"$KV_DOCKER_LOG" 2>&1 </dev/null &
    started_pid=$!
    KV_DOCKER_STARTED=1
  fi
  local i
  for i in $(seq 1 240); do
    kv_docker_answers && { kv_log "private dockerd answers (pid $(kv_docker_private_pid || echo ?))"; return 0; }
    # Give up early only when the daemon is gone: the one started here has exited, or the one
    # waited for no longer runs. A daemon with a large data root may take a while even to write
    # its pid file.
    if [ -n "$started_pid" ]; then
      kill -0 "$started_pid" 2>/dev/null || break
    elif [ "$i" -gt 4 ] && ! kv_docker_private_pid >/dev/null; then
      break
    fi
    sleep 0.5
  done
  kv_log "the private dockerd did not come up; last lines of $KV_DOCKER_LOG:"
  tail -n 15 "$KV_DOCKER_LOG" >&2 || true
  [ "$KV_DOCKER_STARTED" = "1" ] && kv_docker_daemon_stop
  KV_DOCKER_STARTED=0
  return 1
}

# Before the private dockerd starts: the FORWARD policy and whether docker0 exists, so that
# kv_docker_restore_host can undo what dockerd adds to the host (bridge, NAT and filter rules).
kv_docker_save_host() {
  [ -e "$KV_DOCKER_HOSTSTATE" ] && return 0  # an earlier start's state is still to be restored
  {
    echo "forward_policy=$(iptables -S FORWARD 2>/dev/null | sed -n 's/^-P FORWARD //p')"
    if ip link show docker0 >/dev/null 2>&1; then echo "docker0=present"; else echo "docker0=absent"; fi
  } >"$KV_DOCKER_HOSTSTATE"
}

# After the private dockerd stopped, and only when no other dockerd runs: removes Docker's
# iptables rules and chains, restores the FORWARD policy and deletes docker0 if it was not there.
kv_docker_restore_host() {
  [ -r "$KV_DOCKER_HOSTSTATE" ] || return 0
  if pgrep -x dockerd >/dev/null 2>&1; then
    kv_log "another dockerd runs: leaving the host's Docker firewall rules and docker0 alone"
    return 0
  fi
  local policy docker0 table rule chain
  policy="$(sed -n 's/^forward_policy=//p' "$KV_DOCKER_HOSTSTATE")"
  docker0="$(sed -n 's/^docker0=//p' "$KV_DOCKER_HOSTSTATE")"
  if command -v iptables >/dev/null 2>&1; then
    for table in filter nat; do
      iptables -t "$table" -S 2>/dev/null | grep '^-A ' | grep -E 'DOCKER|docker0|[io] br-' \
        | while read -r rule; do
            printf '%s\n' "${rule#-A }" | xargs iptables -t "$table" -D 2>/dev/null || true
          done
      for chain in $(iptables -t "$table" -S 2>/dev/null | sed -n 's/^-N \(DOCKER[A-Za-z0-9_-]*\)$/\1/p'); do
        iptables -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $(iptables -t "$table" -S 2>/dev/null | sed -n 's/^-N \(DOCKER[A-Za-z0-9_-]*\)$/\1/p'); do
        iptables -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
    if [ -n "$policy" ]; then iptables -P FORWARD "$policy" 2>/dev/null || true; fi
  fi
  if [ "$docker0" = "absent" ] && ip link show docker0 >/dev/null 2>&1; then
    ip link delete docker0 2>/dev/null || true
  fi
  rm -f "$KV_DOCKER_HOSTSTATE"
  kv_log "host restored: Docker's iptables rules removed, FORWARD policy ${policy:-unchanged}, docker0 ${docker0:-unknown} before"
}

# kv_docker_daemon_stop: stops the private dockerd by the pid in its pid file (SIGTERM, then
# SIGKILL after 30 s), then undoes its changes to the host. Never touches any other daemon.
kv_docker_daemon_stop() {
  local pid i
  if ! pid="$(kv_docker_private_pid)"; then
    kv_log "no private dockerd is running"
    kv_docker_restore_host
    return 0
  fi
  kv_log "stopping the private dockerd (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 60); do
    if [ ! -d "/proc/$pid" ]; then
      kv_log "private dockerd stopped"
      kv_docker_restore_host
      return 0
    fi
    sleep 0.5
  done
  kv_log "private dockerd (pid $pid) still runs after 30 s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 1
  kv_docker_restore_host
}

# The apt mirror this machine uses: deb822 sources first, then one-line sources.
kv_debian_mirror() {
  if [ -n "${KV_DEBIAN_MIRROR:-}" ]; then echo "$KV_DEBIAN_MIRROR"; return 0; fi
  local mirror=""
  if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    mirror="$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' \
      /etc/apt/sources.list.d/debian.sources | grep -v -- '-security' | head -1)"
  fi
  if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
    mirror="$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
      /etc/apt/sources.list)"
  fi
  [ -n "$mirror" ] || return 1
  echo "$mirror"
}

# kv_docker_base_image: makes debian:bookworm-slim present.
kv_docker_base_image() {
  if docker image inspect "$KV_BASE_IMAGE" >/dev/null 2>&1; then return 0; fi
  if [ "${KV_BASE_IMAGE_PULL:-1}" = "1" ] && timeout 90 docker pull -q "$KV_BASE_IMAGE" >/dev/null 2>&1; then
    kv_log "pulled $KV_BASE_IMAGE"
    return 0
  fi
  kv_log "$KV_BASE_IMAGE is not present and cannot be pulled: bootstrapping it from the apt mirror"
  local mirror rootfs start
  mirror="$(kv_debian_mirror)" || { kv_log "no Debian mirror in the apt sources (set KV_DEBIAN_MIRROR)"; return 1; }
  command -v debootstrap >/dev/null 2>&1 || kv_docker_apt_install debootstrap || return 1
  [ "$(id -u)" -eq 0 ] || { kv_log "debootstrap needs root"; return 1; }
  start=$(date +%s)
  rootfs="$(mktemp -d /var/tmp/kv-rootfs.XXXXXX)"
  if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
    kv_log "debootstrap failed; last lines:"
    tail -n 15 "$rootfs.log" >&2
    rm -rf "$rootfs" "$rootfs.log"
    return 1
  fi
  rm -f "$rootfs.log"
  # The same apt sources as this machine (so that apt inside image builds reaches the mirror),
  # and the slim variant's trimming: no documentation, man pages or translations.
  rm -f "$rootfs/etc/apt/sources.list"
  if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/"
  else
    printf 'deb %s bookworm main\n' "$mirror" >"$rootfs/etc/apt/sources.list"
  fi
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  local rc=0
  tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$KV_BASE_IMAGE" >/dev/null || rc=$?
  rm -rf "$rootfs"
  [ "$rc" -eq 0 ] || { kv_log "docker import failed"; return 1; }
  kv_log "created $KV_BASE_IMAGE with debootstrap in $(( $(date +%s) - start ))s"
}

# A hash of everything deploy/Dockerfile copies into the image (keep in step with its COPY lines).
kv_docker_source_hash() {
  (cd "$KV_REPO_ROOT" && find CMakeLists.txt CMakePresets.json proto storage node client \
      deploy/Dockerfile deploy/setup-deps.sh deploy/CMakeLists.txt deploy/kvprobe.cc \
      deploy/docker-entrypoint.sh \
      .dockerignore -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

kv_docker_build_cmd() {
  # Without buildx, newer clients need the legacy builder asked for explicitly; the Dockerfile
  # works with both.
  if docker buildx version >/dev/null 2>&1; then
    docker build "$@"
  else
    DOCKER_BUILDKIT=0 docker build "$@"
  fi
}

# kv_docker_image: builds $KV_IMAGE unless an image of the same sources exists.
kv_docker_image() {
  local hash current start
  if [ "${KV_IMAGE_REUSE:-0}" = "1" ] && docker image inspect "$KV_IMAGE" >/dev/null 2>&1; then
    kv_log "KV_IMAGE_REUSE=1: using the existing $KV_IMAGE whatever its sources"
    return 0
  fi
  hash="$(kv_docker_source_hash)"
  current="$(docker image inspect -f '{{ index .Config.Labels "org.kvstore.source-hash" }}' \
    "$KV_IMAGE" 2>/dev/null || true)"
  if [ "$current" = "$hash" ] && [ "${KV_FORCE_BUILD:-0}" != "1" ]; then
    kv_log "$KV_IMAGE is up to date (sources $hash)"
    return 0
  fi
  kv_log "building $KV_IMAGE (sources $hash) from deploy/Dockerfile"
  start=$(date +%s)
  kv_docker_build_cmd --force-rm -f "$KV_REPO_ROOT/deploy/Dockerfile" \
    --label "org.kvstore.source-hash=$hash" \
    -t "$KV_IMAGE" "$KV_REPO_ROOT" || return 1
  kv_log "built $KV_IMAGE in $(( $(date +%s) - start ))s, $(docker image inspect -f '{{.Size}}' \
    "$KV_IMAGE" | awk '{ printf "%.1f MB", $1 / 1e6 }')"
  # The images of earlier sources, now untagged, would pile up build after build.
  docker image prune -f --filter "label=org.kvstore.source-hash" >/dev/null 2>&1 || true
}

# kv_docker_prepare: daemon, base image and kvstore:dev. Returns 77 when Docker cannot be had,
# 1 when the image does not build.
kv_docker_prepare() {
  kv_docker_daemon_start || return 77
  kv_compose_ready || return 1
  kv_docker_base_image || return 77
  kv_docker_image || return 1
}

# kv_compose_ready: a Compose command is there, the v2 plugin or docker-compose (installed when
# neither is: Debian 12 ships docker-compose 1.29, which reads the same compose.yaml). Also for
# callers that run Compose themselves (tests/container_e2e_test.py).
kv_compose_ready() {
  docker compose version >/dev/null 2>&1 && return 0
  command -v docker-compose >/dev/null 2>&1 && return 0
  kv_docker_apt_install docker-compose || return 1
  command -v docker-compose >/dev/null 2>&1
}

# kv_compose ARGS: the Compose v2 plugin when present, else docker-compose.
kv_compose() {
  kv_compose_ready || return 1
  if docker compose version >/dev/null 2>&1; then
    docker compose "$@"
  else
    docker-compose "$@"
  fi
}

kv_compose_files() {
  local files=(-f "$KV_REPO_ROOT/deploy/compose.yaml")
  case "${KV_NODES:-3}" in
    3) ;;
    5) files+=(-f "$KV_REPO_ROOT/deploy/compose.5-nodes.yaml") ;;
    *) kv_log "KV_NODES must be 3 or 5"; return 2 ;;
  esac
  if [ "${KV_TLS:-0}" = 1 ]; then
    files+=(-f "$KV_REPO_ROOT/deploy/compose.tls.yaml")
    [ "${KV_NODES:-3}" = 5 ] && files+=(-f "$KV_REPO_ROOT/deploy/compose.5-nodes.tls.yaml")
  fi
  printf '%s\n' "${files[@]}"
}

# With KV_TLS=1: the certificates in KV_TLS_DIR (default .kv-tls in the repository), made by
# deploy/make-tls-certs.sh when it holds none yet. $1 = 0: only locate them (to stop or list a
# cluster), without checking that they are complete and valid for another day.
kv_tls_prepare() {
  [ "${KV_TLS:-0}" = 1 ] || return 0
  local check="${1:-1}"
  local dir="${KV_TLS_DIR:-$KV_REPO_ROOT/.kv-tls}" cert
  if [ ! -f "$dir/ca.pem" ]; then
    bash "$KV_REPO_ROOT/deploy/make-tls-certs.sh" "$dir" || return 1
  fi
  # Compose wants an absolute bind-mount source (docker-compose 1.29 passes a relative one on).
  KV_TLS_DIR="$(cd "$dir" && pwd)" || return 1
  export KV_TLS_DIR
  [ "$check" = 1 ] || return 0
  if [ ! -f "$KV_TLS_DIR/admin.pem" ]; then
    kv_log "$KV_TLS_DIR has no admin.pem (the operators' certificate the kvctl service uses;" \
      "made by this version's deploy/make-tls-certs.sh): make new ones with" \
      "bash deploy/make-tls-certs.sh $KV_TLS_DIR (or delete $KV_TLS_DIR to have them made)"
    return 1
  fi
  for cert in "$KV_TLS_DIR"/*.pem; do
    if ! openssl x509 -checkend 86400 -noout -in "$cert" >/dev/null 2>&1; then
      kv_log "$cert expires within a day (or is not a certificate): make new ones with" \
        "bash deploy/make-tls-certs.sh $KV_TLS_DIR (or delete $KV_TLS_DIR to have them made)"
      return 1
    fi
  done
}

kv_compose_cluster() {
  local files check=1
  case " $* " in *" down "* | *" ps "* | *" logs "*) check=0 ;; esac
  kv_tls_prepare "$check" || return 1
  mapfile -t files < <(kv_compose_files)
  [ ${#files[@]} -gt 0 ] || return 2
  kv_compose -p "$KV_COMPOSE_PROJECT" "${files[@]}" "$@"
}

# kv_docker_wait_healthy TIMEOUT CONTAINER...: waits until every container's health check
# passes. Prints the seconds it took.
kv_docker_wait_healthy() {
  local timeout="$1" start c state all
  shift
  start=$(date +%s)
  while true; do
    all=1
    for c in "$@"; do
      state="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$c" 2>/dev/null || echo missing)"
      [ "$state" = "healthy" ] || all=0
    done
    [ "$all" = 1 ] && { echo $(( $(date +%s) - start )); return 0; }
    if [ $(( $(date +%s) - start )) -ge "$timeout" ]; then
      for c in "$@"; do
        kv_log "$c: $(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c" 2>&1)"
        docker logs --tail 10 "$c" >&2 2>&1 || true
      done
      return 1
    fi
    sleep 0.5
  done
}

kv_docker_up() {
  local rc=0 start ids
  kv_docker_prepare || rc=$?
  if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 77 ] && kv_log "Docker is not available here; nothing started"
    return "$rc"
  fi
  start=$(date +%s)
  kv_compose_cluster up -d --no-build
  mapfile -t ids < <(kv_compose_cluster ps -q)
  kv_docker_wait_healthy "${KV_UP_TIMEOUT:-180}" "${ids[@]}" >/dev/null || {
    kv_log "the cluster did not become healthy"
    return 1
  }
  kv_log "${#ids[@]} nodes healthy $(( $(date +%s) - start ))s after up"
  kv_compose_cluster ps >&2
  local tls="" env=""
  if [ "${KV_TLS:-0}" = 1 ]; then
    tls=", mutual TLS with the certificates in $KV_TLS_DIR"
    env="KV_TLS=1 KV_TLS_DIR=$KV_TLS_DIR "
  fi
  cat >&2 <<MSG

The cluster runs (project $KV_COMPOSE_PROJECT, ${KV_NODES:-3} nodes, ports on 127.0.0.1 only$tls).
  ${env}bash deploy/docker-env.sh kvctl put greeting hello
  ${env}bash deploy/docker-env.sh kvctl get greeting
  ${env}bash deploy/docker-env.sh kvctl cluster status
  ${env}bash deploy/docker-env.sh compose exec -T node1 kvctl describe-key greeting
  ${env}bash deploy/docker-env.sh down        # add -v to delete the data volumes
MSG
}

kv_docker_down() {
  kv_compose_cluster --profile tools down --remove-orphans "$@" || return 1
  if [ "${KV_KEEP_DAEMON:-0}" != "1" ] && kv_docker_private_pid >/dev/null \
      && [ "${DOCKER_HOST:-}" = "unix://$KV_DOCKER_SOCK" ]; then
    if [ -z "$(docker ps -q)" ]; then
      kv_docker_daemon_stop
    else
      kv_log "other containers still run on the private dockerd; leaving it up"
    fi
  fi
}

kv_docker_main() {
  local cmd="${1:-}"
  [ $# -gt 0 ] && shift
  case "$cmd" in
    up) kv_docker_up ;;
    down)
      kv_docker_daemon_start || { kv_log "no Docker daemon: nothing to stop"; return 0; }
      kv_docker_down "$@" ;;
    kvctl)
      kv_docker_daemon_start || return 77
      kv_compose_cluster run --rm -T kvctl "$@" ;;
    compose)
      kv_docker_daemon_start || return 77
      kv_compose_cluster "$@" ;;
    env)
      kv_docker_daemon_start >&2 || return 77
      [ -n "${DOCKER_HOST:-}" ] && echo "export DOCKER_HOST=$DOCKER_HOST" ;;
    prepare) kv_docker_prepare ;;
    daemon-start) kv_docker_daemon_start || return 77 ;;
    daemon-stop) kv_docker_daemon_stop ;;
    daemon-status)
      if pid="$(kv_docker_private_pid)"; then echo "private dockerd running, pid $pid, socket $KV_DOCKER_SOCK"
      else echo "no private dockerd"; fi ;;
    base-image) kv_docker_daemon_start || return 77; kv_docker_base_image ;;
    image) kv_docker_daemon_start || return 77; kv_docker_base_image || return 77; kv_docker_image ;;
    ""|-h|--help|help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' ;;
    *) kv_log "unknown command $cmd (try --help)"; return 2 ;;
  esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  kv_docker_main "$@"
fi
