#!/usr/bin/env python3
"""End-to-end tests of the kvstore image with real faults (ctest label "container").

Prepares Docker with deploy/docker-env.sh (a private daemon when none answers, the base image
bootstrapped from the apt mirror when it cannot be pulled, kvstore:dev built only when its sources
changed), then runs, against real containers:

  image      the image: non-root user, volume, exposed port, health check, no missing libraries
  compose    deploy/compose.yaml: up, every node healthy (timed), kvctl through the tools
             service and through a node, ports published on 127.0.0.1 only, down -v
  compose-tls  the same with deploy/compose.tls.yaml and certificates from
             deploy/make-tls-certs.sh: healthy (kvprobe over mutual TLS), replicated over TLS,
             host kvctl with the client certificate through a published port, plaintext refused
  then a 3-node cluster (docker run, the same settings as compose.yaml, on a user-defined
  network with fixed addresses so that a reconnected or restarted node keeps its address):
  write-all  writes through every node; each acknowledged write on every replica
  partition  docker network disconnect of one node; writes continue on the majority side (W=2)
             and on the isolated node itself (W=1); reconnect; every acknowledged write reaches
             every replica and the replicas converge
  kill       docker kill -s KILL of a node in the middle of a write load, restart; every
             acknowledged write present on every replica
  pause      docker pause (cgroup freezer) of a node under load, unpause; every acknowledged
             write present
  sigstop    SIGSTOP of kvnode alone (docker kill -s STOP): the container runs and its port still
             accepts TCP connections, so the health check must ask the application (grpc.health.v1)
             to turn unhealthy; SIGCONT; every acknowledged write present
  rolling    docker stop (SIGTERM, drain) / start / wait healthy of every node in turn under
             continuous writes and reads: no client operation may fail after its retries
  final      every write acknowledged in any phase is on every replica

Every loop is bounded in count and time; client traffic goes only to the containers. Containers,
networks and volumes are removed at the end (and leftovers of killed earlier runs at the start);
the private daemon is stopped again if this test started it. Exit code 77 (ctest: skipped) with a
SKIP line when Docker cannot be started here; KV_REQUIRE_DOCKER=1 turns that into a failure.

  python3 tests/container_e2e_test.py [--kvctl=PATH-to-host-kvctl] [--phases=a,b,...]
"""

import argparse
import ipaddress
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_SCRIPT = os.path.join(REPO, "deploy", "docker-env.sh")
SKIP = 77
PORT = 7700
LABEL = "kvstore.e2e"
ALL_PHASES = ["image", "compose", "compose-tls", "write-all", "partition", "kill", "pause",
              "sigstop", "rolling", "final"]

T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


class Failure(Exception):
    pass


def run(args, check=True, timeout=120, input=None, env=None):
    """Runs a command and returns CompletedProcess (text)."""
    try:
        proc = subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired:
        raise Failure(f"timed out after {timeout}s: {shlex.join(args)}")
    if check and proc.returncode != 0:
        raise Failure(f"{shlex.join(args)} exited {proc.returncode}: "
                      f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc


def docker(*args, check=True, timeout=120, input=None):
    return run(["docker", *args], check=check, timeout=timeout, input=input)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# --------------------------------------------------------------------------------------------
# Docker preparation and cleanup


def prepare_docker():
    """Daemon, base image and kvstore:dev through deploy/docker-env.sh. Returns (started, image)."""
    script = ('source "$1"; rc=0; kv_docker_prepare || rc=$?; '
              'echo "KV_RESULT DOCKER_HOST=${DOCKER_HOST:-} STARTED=$KV_DOCKER_STARTED '
              'IMAGE=$KV_IMAGE RC=$rc"; exit 0')
    log("preparing Docker: daemon, base image, kvstore image (deploy/docker-env.sh)")
    proc = subprocess.run(["bash", "-c", script, "bash", ENV_SCRIPT], stdout=subprocess.PIPE,
                          text=True, timeout=1800)
    fields = {}
    for line in proc.stdout.splitlines():
        if line.startswith("KV_RESULT "):
            for item in line.split()[1:]:
                k, _, v = item.partition("=")
                fields[k] = v
        else:
            print(line, flush=True)
    rc = int(fields.get("RC", "1"))
    if rc == SKIP:
        reason = "Docker cannot be started here (see the docker-env messages above)"
        if os.environ.get("KV_REQUIRE_DOCKER") == "1":
            raise Failure(reason + " and KV_REQUIRE_DOCKER=1")
        print(f"SKIP: {reason}", flush=True)
        sys.exit(SKIP)
    if rc != 0:
        raise Failure("the kvstore image could not be prepared (see above)")
    if fields.get("DOCKER_HOST"):
        os.environ["DOCKER_HOST"] = fields["DOCKER_HOST"]
    return fields.get("STARTED") == "1", fields.get("IMAGE") or "kvstore:dev"


def stop_private_daemon():
    subprocess.run(["bash", "-c", 'source "$1"; kv_docker_daemon_stop', "bash", ENV_SCRIPT],
                   timeout=120)


def remove_stale():
    """Removes what earlier runs of this test left behind when they were killed (their process
    is gone): containers, networks and volumes labelled kvstore.e2e.pid=<pid>, and compose
    projects named kve2e<pid>c."""
    def dead(pid_text):
        return pid_text.isdigit() and not pid_alive(int(pid_text))

    rows = docker("ps", "-a", "--filter", f"label={LABEL}", "--format",
                  '{{.ID}} {{.Label "' + LABEL + '.pid"}}', check=False).stdout.splitlines()
    compose_rows = docker("ps", "-a", "--filter", "label=com.docker.compose.project", "--format",
                          '{{.ID}} {{.Label "com.docker.compose.project"}}',
                          check=False).stdout.splitlines()
    stale_projects = set()
    for line in compose_rows:
        cid, _, project = line.partition(" ")
        if project.startswith("kve2e") and project.endswith("c") and dead(project[5:-1]):
            stale_projects.add(project)
            rows.append(f"{cid} {project[5:-1]}")
    for line in rows:
        cid, _, pid = line.partition(" ")
        if dead(pid):
            docker("unpause", cid, check=False)
            docker("rm", "-f", "-v", cid, check=False)
    for kind in ("network", "volume"):
        for name in docker(kind, "ls", "-q", "--filter", f"label={LABEL}", check=False).stdout.split():
            pid = docker(kind, "inspect", "-f", '{{index .Labels "' + LABEL + '.pid"}}', name,
                         check=False).stdout.strip()
            if dead(pid):
                docker(kind, "rm", name, check=False)
        for project in stale_projects:
            for name in docker(kind, "ls", "-q", "--filter", f"name={project}_",
                               check=False).stdout.split():
                docker(kind, "rm", name, check=False)


# --------------------------------------------------------------------------------------------
# The cluster


class Cluster:
    def __init__(self, image, nodes=3):
        self.image = image
        self.rid = f"kve2e{os.getpid()}"
        self.labels = ["--label", f"{LABEL}=1", "--label", f"{LABEL}.pid={os.getpid()}"]
        self.net = f"{self.rid}-net"
        self.ids = [f"n{i}" for i in range(1, nodes + 1)]
        self.name = {n: f"{self.rid}-{n}" for n in self.ids}
        self.client = f"{self.rid}-client"
        self.zones = {n: f"zone-{chr(ord('a') + i)}" for i, n in enumerate(self.ids)}
        self.peers = ",".join(f"{n}={self.name[n]}:{PORT}@{self.zones[n]}" for n in self.ids)
        self.endpoints = ",".join(f"{self.name[n]}:{PORT}" for n in self.ids)
        self.ip = {}
        self.created = {"containers": [], "volumes": [], "networks": []}

    def endpoint(self, n):
        return f"{self.name[n]}:{PORT}"

    def create(self):
        # A user-defined network with a subnet Docker picks (so it does not collide with anything),
        # re-created with that subnet made explicit: only then can containers keep fixed addresses
        # across disconnect/connect and restarts.
        docker("network", "create", *self.labels, self.net)
        subnet = docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}",
                        self.net).stdout.strip()
        docker("network", "rm", self.net)
        docker("network", "create", *self.labels, "--subnet", subnet, self.net)
        self.created["networks"].append(self.net)
        hosts = list(ipaddress.ip_network(subnet).hosts())
        for i, n in enumerate(self.ids):
            self.ip[n] = str(hosts[10 + i])
            volume = f"{self.rid}-{n}-data"
            docker("volume", "create", *self.labels, volume)
            self.created["volumes"].append(volume)
            self.created["containers"].append(self.name[n])
            docker("run", "-d", "--name", self.name[n], "--hostname", self.name[n], *self.labels,
                   "--network", self.net, "--ip", self.ip[n], "-v", f"{volume}:/var/lib/kv",
                   "-e", f"KVNODE_NODE_ID={n}", "-e", f"KVNODE_PEERS={self.peers}",
                   "-e", "KVNODE_REPLICATION_FACTOR=3", "-e", "KVNODE_WRITE_QUORUM=2",
                   "-e", "KVNODE_READ_QUORUM=1", "-e", "KVNODE_SYNC_WRITES=true",
                   "-e", "KVNODE_SHUTDOWN_DRAIN=1s", "-e", f"KV_ENDPOINTS={self.endpoints}",
                   "--health-interval=1s", "--health-timeout=3s", "--health-retries=3",
                   "--health-start-period=30s", "--stop-timeout=30", "--read-only",
                   "--cap-drop=ALL", "--security-opt=no-new-privileges:true", self.image)
        self.created["containers"].append(self.client)
        docker("run", "-d", "--name", self.client, *self.labels, "--network", self.net,
               "--tmpfs", "/var/lib/kv", "-e", f"KV_ENDPOINTS={self.endpoints}",
               "--entrypoint", "sleep", self.image, "3600")

    def cleanup(self):
        for c in self.created["containers"]:
            docker("unpause", c, check=False, timeout=30)
            docker("rm", "-f", "-v", c, check=False, timeout=60)
        for v in self.created["volumes"]:
            docker("volume", "rm", "-f", v, check=False, timeout=60)
        for n in self.created["networks"]:
            docker("network", "rm", n, check=False, timeout=60)

    def health(self, n):
        return docker("inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", self.name[n],
                      check=False).stdout.strip()

    def wait_healthy(self, nodes=None, timeout=90):
        start = time.monotonic()
        nodes = nodes or self.ids
        while True:
            states = {n: self.health(n) for n in nodes}
            if all(s == "running healthy" for s in states.values()):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                for n in nodes:
                    print(docker("logs", "--tail", "20", self.name[n], check=False).stderr)
                raise Failure(f"not healthy after {timeout}s: {states}")
            time.sleep(0.25)

    def sh(self, script, container=None, timeout=300, input=None, env=None):
        args = ["exec", "-i"]
        for k, v in (env or {}).items():
            args += ["-e", f"{k}={v}"]
        return docker(*args, container or self.client, "sh", "-c", script, timeout=timeout,
                      input=input)

    # ---- load ----

    PUT_LOOP = r'''
i=0; ok=0; fail=0; end=$(( $(date +%s) + MAX_SECONDS ))
while [ "$i" -lt "$COUNT" ] && [ "$(date +%s)" -lt "$end" ] && [ ! -e "$STOP" ]; do
  k="$PREFIX/$i"
  if out=$(kvctl --endpoints="$EP" --timeout="$TIMEOUT" put $EXTRA "$k" "val-$k" 2>&1); then
    echo "OK $k"; ok=$((ok+1))
  else
    rc=$?; echo "FAIL $k rc=$rc $(echo "$out" | tr '\n' ' ' | cut -c1-300)"; fail=$((fail+1))
  fi
  i=$((i+1))
  [ -n "$PACE" ] && sleep "$PACE"
done
echo "DONE ops=$i ok=$ok fail=$fail"
'''

    GET_LOOP = r'''
i=0; ok=0; fail=0; end=$(( $(date +%s) + MAX_SECONDS ))
set -- $KEYS
while [ "$i" -lt "$COUNT" ] && [ "$(date +%s)" -lt "$end" ] && [ ! -e "$STOP" ]; do
  k="$1"; shift; set -- "$@" "$k"
  if out=$(kvctl --endpoints="$EP" --timeout="$TIMEOUT" get "$k" 2>&1) \
      && echo "$out" | grep -qx "value: val-$k"; then
    echo "OK $k"; ok=$((ok+1))
  else
    rc=$?; echo "FAIL $k rc=$rc $(echo "$out" | tr '\n' ' ' | cut -c1-300)"; fail=$((fail+1))
  fi
  i=$((i+1))
  [ -n "$PACE" ] && sleep "$PACE"
done
echo "DONE ops=$i ok=$ok fail=$fail"
'''

    def start_load(self, kind, prefix="", count=200, seconds=60, endpoints=None, timeout="10s",
                   extra="", keys=(), pace="", container=None, stop="/tmp/stop"):
        env = {"PREFIX": prefix, "COUNT": str(count), "MAX_SECONDS": str(seconds),
               "EP": endpoints or self.endpoints, "TIMEOUT": timeout, "EXTRA": extra,
               "PACE": pace, "STOP": stop, "KEYS": " ".join(keys)}
        args = ["docker", "exec"]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        script = self.PUT_LOOP if kind == "put" else self.GET_LOOP
        args += [container or self.client, "sh", "-c", script]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return {"proc": proc, "seconds": seconds, "kind": kind}

    def finish_load(self, load):
        try:
            out, _ = load["proc"].communicate(timeout=load["seconds"] + 60)
        except subprocess.TimeoutExpired:
            load["proc"].kill()
            out, _ = load["proc"].communicate()
            raise Failure(f"{load['kind']} load did not end in time")
        ok = [line.split()[1] for line in out.splitlines() if line.startswith("OK ")]
        fails = [line for line in out.splitlines() if line.startswith("FAIL ")]
        if "DONE " not in out:
            raise Failure(f"{load['kind']} load ended abnormally: {out[-1000:]}")
        return ok, fails

    def writes(self, prefix, count, **kw):
        return self.finish_load(self.start_load("put", prefix, count, **kw))

    # ---- verification ----

    DESCRIBE = r'''
while read -r k; do
  out=$(kvctl --endpoints="$EP" --timeout=10s --json describe-key "$k" 2>&1); rc=$?
  printf '%s\t%s\t%s\n' "$k" "$rc" "$(echo "$out" | tr -d '\n')"
done
'''

    def describe(self, keys):
        """Runs describe-key for every key (4 workers in the client container)."""
        keys = list(keys)
        if not keys:
            return {}
        shards = [keys[i::4] for i in range(4)]
        procs = []
        for shard in shards:
            if not shard:
                continue
            p = subprocess.Popen(["docker", "exec", "-i", "-e", f"EP={self.endpoints}",
                                  self.client, "sh", "-c", self.DESCRIBE],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
            procs.append((p, "\n".join(shard) + "\n"))
        results = {}
        for p, data in procs:
            try:
                out, _ = p.communicate(input=data, timeout=600)
            except subprocess.TimeoutExpired:
                p.kill()
                raise Failure("describe-key batch timed out")
            for line in out.splitlines():
                parts = line.split("\t", 2)
                if len(parts) == 3:
                    results[parts[0]] = (parts[1], parts[2])
        return results

    def key_problem(self, key, result):
        """None when every replica holds the key's value and the replicas agree."""
        if result is None:
            return "no answer"
        rc, text = result
        if rc != "0":
            return f"describe-key exit {rc}: {text[:200]}"
        try:
            doc = json.loads(text)
        except ValueError:
            return f"bad JSON: {text[:200]}"
        replicas = doc.get("replicas", [])
        if len(replicas) != len(self.ids):
            return f"{len(replicas)} replicas described, expected {len(self.ids)}"
        want = f"val-{key}"
        for r in replicas:
            if not r.get("reachable"):
                return f"replica {r.get('node_id')} unreachable"
            values = [v.get("value") for v in r.get("versions", []) if not v.get("tombstone")]
            if want not in values:
                return f"replica {r.get('node_id')} lacks the value (has {values})"
        if not doc.get("converged"):
            return "replicas hold different versions (converged: false)"
        return None

    def wait_converged(self, keys, timeout=120):
        """Waits until every key is on every replica and converged; returns seconds taken."""
        start = time.monotonic()
        pending = list(dict.fromkeys(keys))
        problems = {}
        while pending:
            results = self.describe(pending)
            problems = {k: self.key_problem(k, results.get(k)) for k in pending}
            pending = [k for k, p in problems.items() if p]
            if not pending:
                break
            if time.monotonic() - start > timeout:
                sample = {k: problems[k] for k in pending[:5]}
                raise Failure(f"{len(pending)} of {len(keys)} acknowledged writes are not on "
                              f"every replica after {timeout}s, e.g. {sample}")
            time.sleep(1)
        return time.monotonic() - start


# --------------------------------------------------------------------------------------------
# Phases


def phase_image(ctx):
    image = ctx["image"]
    cfg = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    user = cfg.get("User")
    if not user or user in ("root", "0"):
        raise Failure(f"image runs as {user!r}, expected a non-root user")
    if "/var/lib/kv" not in (cfg.get("Volumes") or {}):
        raise Failure(f"no /var/lib/kv volume: {cfg.get('Volumes')}")
    if f"{PORT}/tcp" not in (cfg.get("ExposedPorts") or {}):
        raise Failure(f"port {PORT} not exposed: {cfg.get('ExposedPorts')}")
    health = (cfg.get("Healthcheck") or {}).get("Test") or []
    if "kvprobe" not in " ".join(health):
        raise Failure(f"health check is not the gRPC probe: {health}")
    out = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                 "id -u; for b in kvnode kvctl kvprobe; do ldd /usr/local/bin/$b; done").stdout
    if "not found" in out:
        raise Failure("missing runtime libraries:\n" + out)
    uid = out.split()[0]
    if uid == "0":
        raise Failure("container runs as uid 0")
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout.strip())
    return f"user {user} (uid {uid}), volume /var/lib/kv, port {PORT}, HEALTHCHECK {health[1:]}, " \
           f"all libraries resolve, size {size / 1e6:.1f} MB"


def compose_cmd(project, extra_files=()):
    files = ["-f", os.path.join(REPO, "deploy", "compose.yaml")]
    for f in extra_files:
        files += ["-f", os.path.join(REPO, "deploy", f)]
    if run(["docker", "compose", "version"], check=False).returncode == 0:
        return ["docker", "compose", "-p", project, *files]
    return ["docker-compose", "-p", project, *files]


def compose_up_healthy(base, env):
    """`up -d` of a 3-node compose cluster; waits until every node's health check passes.
    Returns the container ids and the seconds it took."""
    start = time.monotonic()
    run([*base, "up", "-d", "--no-build"], env=env, timeout=180)
    ids = run([*base, "ps", "-q"], env=env).stdout.split()
    if len(ids) != 3:
        raise Failure(f"compose started {len(ids)} containers, expected 3")
    deadline = start + 120
    while True:
        states = [docker("inspect", "-f", "{{.State.Health.Status}}", c).stdout.strip()
                  for c in ids]
        if all(s == "healthy" for s in states):
            return ids, time.monotonic() - start
        if time.monotonic() > deadline:
            logs = docker("logs", "--tail", "5", ids[0], check=False)
            raise Failure(f"compose cluster not healthy after 120s: {states}; first node's "
                          f"log: {logs.stdout}{logs.stderr}")
        time.sleep(0.25)


def phase_compose(ctx):
    project = f"kve2e{os.getpid()}c"
    ports = [free_port() for _ in range(3)]
    env = dict(os.environ, KV_IMAGE=ctx["image"],
               **{f"KV_PORT_{i + 1}": str(p) for i, p in enumerate(ports)})
    base = compose_cmd(project)
    try:
        ids, up_secs = compose_up_healthy(base, env)
        ctx["figures"]["compose up -> 3 nodes healthy (s)"] = round(up_secs, 1)
        run([*base, "run", "--rm", "-T", "kvctl", "put", "compose/greeting", "hello"], env=env)
        got = run([*base, "exec", "-T", "node2", "kvctl", "get", "compose/greeting"],
                  env=env).stdout
        if "value: hello" not in got:
            raise Failure(f"get through node2 returned {got!r}")
        status = run([*base, "run", "--rm", "-T", "kvctl", "cluster", "status"], env=env).stdout
        for zone in ("zone-a", "zone-b", "zone-c"):
            if zone not in status:
                raise Failure(f"cluster status lacks {zone}: {status}")
        published = []
        for c in ids:
            mapping = docker("port", c, f"{PORT}/tcp").stdout.split()
            for m in mapping:
                if not m.startswith("127.0.0.1:"):
                    raise Failure(f"port published on {m}, expected 127.0.0.1 only")
            published += mapping
        host_check = "host kvctl not given"
        if ctx.get("kvctl") and os.access(ctx["kvctl"], os.X_OK):
            eps = ",".join(f"127.0.0.1:{p}" for p in ports)
            out = run([ctx["kvctl"], f"--endpoints={eps}", "--timeout=10s", "get",
                       "compose/greeting"]).stdout
            if "value: hello" not in out:
                raise Failure(f"host kvctl through the published ports got {out!r}")
            host_check = "host kvctl reads it through the published ports"
        return f"healthy {up_secs:.1f}s after up; put via the kvctl service, get via node2; " \
               f"zones a/b/c; ports {' '.join(published)}; {host_check}"
    finally:
        run([*base, "--profile", "tools", "down", "-v", "--remove-orphans"], env=env, check=False,
            timeout=180)
        left = docker("volume", "ls", "-q", "--filter", f"name={project}_").stdout.split()
        if left:
            raise Failure(f"compose down -v left volumes {left}")


def phase_compose_tls(ctx):
    project = f"kve2e{os.getpid()}t"
    ports = [free_port() for _ in range(3)]
    tmp = run(["mktemp", "-d", "/tmp/kv-e2e-tls.XXXXXX"]).stdout.strip()
    tls_dir = os.path.join(tmp, "tls")
    env = dict(os.environ, KV_IMAGE=ctx["image"], KV_TLS_DIR=tls_dir,
               **{f"KV_PORT_{i + 1}": str(p) for i, p in enumerate(ports)})
    base = compose_cmd(project, ["compose.tls.yaml"])
    try:
        run(["bash", os.path.join(REPO, "deploy", "make-tls-certs.sh"), tls_dir,
             "node1", "node2", "node3"])
        ids, up_secs = compose_up_healthy(base, env)
        ctx["figures"]["compose with TLS up -> 3 nodes healthy (s)"] = round(up_secs, 1)
        logs = docker("logs", ids[0]).stderr
        if "tls=mutual" not in logs:
            raise Failure(f"node1 does not log tls=mutual: {logs[-500:]}")
        run([*base, "run", "--rm", "-T", "kvctl", "put", "tls/greeting", "hello"], env=env)
        # Replicated over the peers' TLS channels: node3's own replica holds it.
        deadline = time.monotonic() + 60
        while True:
            out = run([*base, "exec", "-T", "node3", "kvctl", "describe-key", "tls/greeting"],
                      env=env, check=False).stdout
            if "converged: yes" in out and "replica n3: 1 version" in out:
                break
            if time.monotonic() > deadline:
                raise Failure(f"tls/greeting did not reach every replica: {out!r}")
            time.sleep(0.5)
        host_check = "host kvctl not given"
        if ctx.get("kvctl") and os.access(ctx["kvctl"], os.X_OK):
            ep = f"--endpoints=127.0.0.1:{ports[1]}"
            tls = [f"--tls-ca={tls_dir}/ca.pem", f"--tls-cert={tls_dir}/client.pem",
                   f"--tls-key={tls_dir}/client.key"]
            out = run([ctx["kvctl"], ep, "--timeout=10s", *tls, "get", "tls/greeting"]).stdout
            if "value: hello" not in out:
                raise Failure(f"host kvctl over TLS got {out!r}")
            plain = run([ctx["kvctl"], ep, "--timeout=3s", "get", "tls/greeting"], check=False,
                        env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
            if plain.returncode != 3:
                raise Failure(f"plaintext kvctl was not refused (exit {plain.returncode}): "
                              f"{plain.stdout}{plain.stderr}")
            # Admin calls (--tls_admin_names=node*,kv-admin): the applications' client
            # certificate is refused, the operators' admin certificate is let in (an unknown
            # operation: NOT_FOUND).
            for cert, code, want in (("client", 3, "PERMISSION_DENIED"), ("admin", 1, "NOT_FOUND")):
                tls = [f"--tls-ca={tls_dir}/ca.pem", f"--tls-cert={tls_dir}/{cert}.pem",
                       f"--tls-key={tls_dir}/{cert}.key"]
                out = run([ctx["kvctl"], ep, "--timeout=10s", *tls, "operation", "cancel",
                           "node1:1-1"], check=False,
                          env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
                if out.returncode != code or want not in out.stderr:
                    raise Failure(f"operation cancel with {cert}.pem: exit {out.returncode}, "
                                  f"expected {want}: {out.stdout}{out.stderr}")
            host_check = ("host kvctl reads it over TLS through a published port; plaintext "
                          "refused; admin calls refused to client.pem, let in for admin.pem")
        return f"healthy {up_secs:.1f}s after up (kvprobe over mutual TLS); put via the kvctl " \
               f"service, on every replica; {host_check}"
    finally:
        run([*base, "--profile", "tools", "down", "-v", "--remove-orphans"], env=env, check=False,
            timeout=180)
        run(["rm", "-rf", tmp], check=False)


def phase_write_all(ctx):
    c = ctx["cluster"]
    acked = []
    for n in c.ids:
        ok, fails = c.writes(f"all/{n}", 40, endpoints=c.endpoint(n), seconds=120)
        if fails or len(ok) != 40:
            raise Failure(f"writes through {n}: {len(ok)} ok, failures {fails[:3]}")
        acked += ok
    # Reads of new keys through every node (read-after-write, C3).
    for n in c.ids:
        ok, fails = c.finish_load(c.start_load("get", count=len(acked[:30]), keys=acked[:30],
                                               endpoints=c.endpoint(n), seconds=60))
        if fails:
            raise Failure(f"reads through {n} failed: {fails[:3]}")
    secs = c.wait_converged(acked, timeout=60)
    ctx["acked"] += acked
    ctx["read_keys"] = acked[:60]
    return f"{len(acked)} writes through n1/n2/n3 all acknowledged; 30 reads through each node; " \
           f"all on every replica ({secs:.1f}s)"


def phase_partition(ctx):
    c = ctx["cluster"]
    cut = c.ids[-1]
    docker("network", "disconnect", c.net, c.name[cut])
    log(f"partition: {cut} disconnected from {c.net}")
    try:
        majority = c.start_load("put", "part/major", count=60, seconds=90, pace="0.05")
        # The isolated node acknowledges W=1 writes alone (kvctl inside its own container).
        ok_iso, fails_iso = c.finish_load(c.start_load(
            "put", "part/isolated", count=10, seconds=60, endpoints=f"127.0.0.1:{PORT}",
            extra="--w=1", timeout="5s", container=c.name[cut]))
        # A W=2 write there cannot be acknowledged (no second replica is reachable).
        w2 = docker("exec", c.name[cut], "kvctl", f"--endpoints=127.0.0.1:{PORT}",
                    "--timeout=3s", "put", "part/isolated-w2", "val-part/isolated-w2",
                    check=False, timeout=60)
        ok_major, fails_major = c.finish_load(majority)
        view = c.describe(["part/major/0"]).get("part/major/0")
        seen_unreachable = view is not None and '"reachable":false' in view[1].replace(" ", "")
    finally:
        docker("network", "connect", "--ip", c.ip[cut], c.net, c.name[cut])
        log(f"partition healed: {cut} reconnected")
    if fails_major:
        raise Failure(f"majority-side writes failed: {fails_major[:3]}")
    if fails_iso or len(ok_iso) != 10:
        raise Failure(f"W=1 writes on the isolated node: {len(ok_iso)} ok, {fails_iso[:3]}")
    if w2.returncode == 0:
        raise Failure("a W=2 write on the isolated node was acknowledged")
    acked = ok_major + ok_iso
    secs = c.wait_converged(acked, timeout=120)
    ctx["acked"] += acked
    ctx["figures"]["partition: convergence after heal (s)"] = round(secs, 1)
    return f"{len(ok_major)} majority writes (W=2) + {len(ok_iso)} isolated-side writes (W=1) " \
           f"acknowledged, 0 failed; W=2 on the isolated node refused (exit {w2.returncode}); " \
           f"describe-key showed the cut replica unreachable: {seen_unreachable}; " \
           f"every acknowledged write on every replica {secs:.1f}s after heal"


def phase_kill(ctx):
    c = ctx["cluster"]
    victim = c.ids[1]
    load = c.start_load("put", "kill", count=150, seconds=120, pace="0.02")
    time.sleep(2)
    docker("kill", "-s", "KILL", c.name[victim])
    killed_at = time.monotonic()
    log(f"kill: SIGKILL {victim}")
    code = docker("wait", c.name[victim], timeout=30).stdout.strip()
    time.sleep(2)
    docker("start", c.name[victim])
    healthy = c.wait_healthy([victim], timeout=90)
    down = time.monotonic() - killed_at
    ok, fails = c.finish_load(load)
    secs = c.wait_converged(ok, timeout=120)
    ctx["acked"] += ok
    ctx["figures"]["kill -9: client ops failed"] = len(fails)
    if len(ok) < 50:
        raise Failure(f"only {len(ok)} writes acknowledged during the kill phase: {fails[:3]}")
    return f"{victim} killed (exit {code}) mid-load and restarted (healthy {healthy:.1f}s after " \
           f"start, {down:.1f}s down); {len(ok)} writes acknowledged, {len(fails)} failed after " \
           f"retries{': ' + fails[0] if fails else ''}; all acknowledged writes on every " \
           f"replica ({secs:.1f}s)"


def pause_container(name, attempts=3):
    """docker pause. runc's cgroup freezer gives up ("unable to freeze") when a task of the
    container sits in an uninterruptible wait (a disk flush under the load) at that moment; that
    error alone is tried again, a few times. Returns the attempts it took."""
    for attempt in range(1, attempts + 1):
        proc = docker("pause", name, check=False)
        if proc.returncode == 0:
            return attempt
        error = (proc.stderr or proc.stdout).strip()
        if "unable to freeze" not in error or attempt == attempts:
            raise Failure(f"docker pause {name} exited {proc.returncode} (try {attempt}): "
                          f"{error[-2000:]}")
        log(f"pause: the runtime could not freeze {name} (try {attempt}: {error[-200:]}); "
            f"trying again")
        time.sleep(0.5)


def phase_pause(ctx):
    c = ctx["cluster"]
    victim = c.ids[0]
    before = c.health(victim)
    if before != "running healthy":
        raise Failure(f"{victim} is {before!r} before the pause")
    load = c.start_load("put", "pause", count=200, seconds=120, pace="0.02")
    time.sleep(1)
    tries = pause_container(c.name[victim])
    log(f"pause: {victim} frozen (cgroup freezer){f' at try {tries}' if tries > 1 else ''}")
    start = time.monotonic()
    try:
        time.sleep(8)
        during = c.health(victim)
    finally:
        docker("unpause", c.name[victim])
    paused_for = time.monotonic() - start
    log(f"pause: {victim} resumed after {paused_for:.1f}s")
    back = c.wait_healthy([victim], timeout=60)
    ok, fails = c.finish_load(load)
    secs = c.wait_converged(ok, timeout=120)
    ctx["acked"] += ok
    ctx["figures"]["pause: client ops failed"] = len(fails)
    return f"{victim} paused {paused_for:.1f}s (docker reports {during!r}), healthy again " \
           f"{back:.1f}s after unpause; {len(ok)} writes acknowledged, {len(fails)} failed" \
           f"{': ' + fails[0] if fails else ''}; all on every replica ({secs:.1f}s)"


def phase_sigstop(ctx):
    """SIGSTOP of kvnode alone: the container keeps running and accepting TCP connections, so only
    an application-level health check (kvprobe asks grpc.health.v1) notices."""
    c = ctx["cluster"]
    victim = c.ids[2]
    before = c.health(victim)
    if before != "running healthy":
        raise Failure(f"{victim} is {before!r} before SIGSTOP")
    load = c.start_load("put", "sigstop", count=300, seconds=120, pace="0.02")
    time.sleep(1)
    docker("kill", "-s", "STOP", c.name[victim])
    log(f"sigstop: kvnode in {victim} stopped")
    start = time.monotonic()
    unhealthy_after = None
    try:
        while time.monotonic() - start < 40:
            if c.health(victim) == "running unhealthy":
                unhealthy_after = time.monotonic() - start
                break
            time.sleep(0.25)
    finally:
        docker("kill", "-s", "CONT", c.name[victim])
    stopped_for = time.monotonic() - start
    log(f"sigstop: {victim} continued after {stopped_for:.1f}s")
    back = c.wait_healthy([victim], timeout=60)
    ok, fails = c.finish_load(load)
    secs = c.wait_converged(ok, timeout=120)
    ctx["acked"] += ok
    ctx["figures"]["sigstop: client ops failed"] = len(fails)
    if unhealthy_after is None:
        raise Failure(f"{victim} stayed healthy for 40s while kvnode was stopped: the health "
                      "check does not reach the application")
    ctx["figures"]["sigstop: health check turned unhealthy after (s)"] = round(unhealthy_after, 1)
    return f"kvnode in {victim} SIGSTOPped {stopped_for:.1f}s: health check unhealthy after " \
           f"{unhealthy_after:.1f}s, healthy {back:.1f}s after SIGCONT; {len(ok)} writes " \
           f"acknowledged, {len(fails)} failed{': ' + fails[0] if fails else ''}; all on every " \
           f"replica ({secs:.1f}s)"


def phase_rolling(ctx):
    c = ctx["cluster"]
    c.sh("rm -f /tmp/stop")
    puts = c.start_load("put", "rolling", count=3000, seconds=240)
    gets = c.start_load("get", count=3000, seconds=240, keys=ctx["read_keys"])
    steps = []
    try:
        time.sleep(2)
        for n in c.ids:
            t = time.monotonic()
            docker("stop", "-t", "30", c.name[n], timeout=60)
            stopped = time.monotonic() - t
            code = docker("inspect", "-f", "{{.State.ExitCode}}", c.name[n]).stdout.strip()
            if code != "0":
                logs = docker("logs", "--tail", "15", c.name[n], check=False)
                raise Failure(f"{n} exited {code} after SIGTERM, expected a clean 0: "
                              f"{logs.stderr[-1500:]}")
            docker("start", c.name[n])
            healthy = c.wait_healthy([n], timeout=90)
            steps.append(f"{n} stop {stopped:.1f}s/healthy {healthy:.1f}s")
            log(f"rolling: {n} stopped in {stopped:.1f}s (exit 0), healthy {healthy:.1f}s after start")
            time.sleep(1)
    finally:
        c.sh("touch /tmp/stop")
    ok_put, fails_put = c.finish_load(puts)
    ok_get, fails_get = c.finish_load(gets)
    ctx["figures"]["rolling restart: client ops failed"] = len(fails_put) + len(fails_get)
    if fails_put or fails_get:
        raise Failure(f"client operations failed during the rolling restart: puts "
                      f"{fails_put[:3]}, gets {fails_get[:3]}")
    secs = c.wait_converged(ok_put, timeout=120)
    ctx["acked"] += ok_put
    return f"{'; '.join(steps)}; {len(ok_put)} puts + {len(ok_get)} gets under load, 0 failed; " \
           f"all writes on every replica ({secs:.1f}s)"


def phase_final(ctx):
    c = ctx["cluster"]
    secs = c.wait_converged(ctx["acked"], timeout=120)
    return f"all {len(ctx['acked'])} acknowledged writes of every phase on all 3 replicas, " \
           f"converged ({secs:.1f}s to check)"


PHASES = {"image": phase_image, "compose": phase_compose, "compose-tls": phase_compose_tls,
          "write-all": phase_write_all,
          "partition": phase_partition, "kill": phase_kill, "pause": phase_pause,
          "sigstop": phase_sigstop,
          "rolling": phase_rolling, "final": phase_final}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kvctl", help="host kvctl, to read through the published ports")
    parser.add_argument("--phases", default=",".join(ALL_PHASES))
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    for p in phases:
        if p not in PHASES:
            parser.error(f"unknown phase {p}; known: {', '.join(ALL_PHASES)}")

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        started, image = prepare_docker()
    except Failure as e:
        print(f"FAIL: {e}", flush=True)
        return 1
    ctx = {"image": image, "kvctl": args.kvctl, "acked": [], "figures": {}, "read_keys": []}
    results = []
    cluster = None
    try:
        remove_stale()
        cluster_phases = [p for p in phases if p not in ("image", "compose", "compose-tls")]
        for p in phases:
            if p in cluster_phases and cluster is None:
                cluster = Cluster(image)
                t = time.monotonic()
                cluster.create()
                secs = cluster.wait_healthy(timeout=90)
                ctx["figures"]["docker run -> 3 nodes healthy (s)"] = round(time.monotonic() - t, 1)
                ctx["cluster"] = cluster
                log(f"cluster {cluster.rid}: 3 nodes healthy ({secs:.1f}s), network {cluster.net}")
            log(f"=== {p}")
            t = time.monotonic()
            try:
                detail = PHASES[p](ctx)
                results.append((p, "PASS", time.monotonic() - t, detail))
            except Failure as e:
                results.append((p, "FAIL", time.monotonic() - t, str(e)))
            log(f"{p}: {results[-1][1]} ({results[-1][2]:.1f}s): {results[-1][3]}")
            if p == "write-all" and results[-1][1] == "FAIL":
                break
    except KeyboardInterrupt as e:
        results.append(("interrupted", "FAIL", 0, str(e)))
    except Failure as e:
        results.append(("setup", "FAIL", 0, str(e)))
    finally:
        if cluster is not None:
            cluster.cleanup()
            log("cleaned up the cluster's containers, volumes and network")
        if started:
            stop_private_daemon()
    print("\n=== container end-to-end results")
    for name, verdict, secs, detail in results:
        print(f"{verdict}  {name:10s} {secs:6.1f}s  {detail}")
    for k, v in ctx["figures"].items():
        print(f"figure: {k} = {v}")
    print(f"total {time.monotonic() - T0:.1f}s")
    return 0 if results and all(r[1] == "PASS" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
