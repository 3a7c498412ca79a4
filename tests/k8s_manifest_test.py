#!/usr/bin/env python3
"""Checks deploy/k8s against what kvnode and the image expect (ctest label "unit").

No Kubernetes cluster is needed: the manifests are parsed and cross-checked (ports, gRPC probes,
volumes, config, labels, disruption budget versus the write quorum, the image's user and volume),
the image's entrypoint generates each pod's node id and peer list from the manifests' env, and the
real kvnode is started once with exactly those settings and the ConfigMap's config file (on a
free loopback port and a temporary data directory): it must start, report the expected members
through kvctl, and stop cleanly on SIGTERM.

The TLS overlay (deploy/k8s-tls: a JSON 6902 patch of the StatefulSet) is applied here the way
kustomize applies it, checked (a Secret mounted where the KVNODE_TLS_* files are, exec probes
running kvprobe), and run the same way: kvnode with pod 1's patched settings and certificates from
deploy/make-tls-certs.sh --k8s, kvctl with the pod's KV_TLS_* files, the probes' own command with
the pod's environment (it must report SERVING), and plaintext refused.

  python3 tests/k8s_manifest_test.py --kvnode=PATH --kvctl=PATH --kvprobe=PATH
"""

import argparse
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(REPO, "deploy", "k8s")
K8S_TLS = os.path.join(REPO, "deploy", "k8s-tls")
ENTRYPOINT = os.path.join(REPO, "deploy", "docker-entrypoint.sh")
DOCKERFILE = os.path.join(REPO, "deploy", "Dockerfile")
NAMESPACE = "kvtest"

try:
    import yaml
except ImportError:
    print("SKIP: python3-yaml is not installed (apt-get install python3-yaml)")
    sys.exit(77)

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print(f"FAIL: {msg}", flush=True)
    return cond


def load_manifests():
    docs = []
    with open(os.path.join(K8S, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    files = sorted(n for n in os.listdir(K8S) if n.endswith(".yaml") and n != "kustomization.yaml")
    check(sorted(kustomization.get("resources", [])) == files,
          f"kustomization.yaml resources {kustomization.get('resources')} != files {files}")
    for name in files:
        with open(os.path.join(K8S, name)) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    return by_kind


def parse_conf(text):
    """kvnode's config format: `name = value`, # comments."""
    conf = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        conf[name.strip()] = value.split(" #")[0].strip()
    return conf


def seconds(duration):
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)(ms|s|m|h)", duration):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def subset(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def expand(value, env):
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)),
                  value)


def pod_env(container, configmaps, pod_name):
    """The container's env as Kubernetes would set it for pod_name."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = expand(str(e["value"]), env)
            continue
        src = e.get("valueFrom", {})
        if "fieldRef" in src:
            path = src["fieldRef"]["fieldPath"]
            env[e["name"]] = {"metadata.name": pod_name, "metadata.namespace": NAMESPACE}[path]
        elif "configMapKeyRef" in src:
            ref = src["configMapKeyRef"]
            check(ref["name"] in configmaps, f"env {e['name']}: no ConfigMap {ref['name']}")
            env[e["name"]] = str(configmaps.get(ref["name"], {}).get("data", {}).get(ref["key"], ""))
            check(ref["key"] in configmaps.get(ref["name"], {}).get("data", {}),
                  f"env {e['name']}: ConfigMap {ref['name']} has no key {ref['key']}")
        else:
            check(False, f"env {e['name']}: unsupported valueFrom {src}")
    return env


def entrypoint(env, extra_env=None):
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KV_ENTRYPOINT_PRINT": "1", **env,
            **(extra_env or {})}
    out = subprocess.run(["sh", ENTRYPOINT], env=full, capture_output=True, text=True, timeout=30)
    check(out.returncode == 0, f"entrypoint failed for {env.get('POD_NAME')}: {out.stderr}")
    args = out.stdout.splitlines()[1:]
    flags = {}
    for a in args:
        name, _, value = a[2:].partition("=")
        flags[name] = value
    return flags


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dockerfile_facts():
    facts = {}
    with open(DOCKERFILE) as f:
        text = f.read()
    m = re.search(r'^VOLUME \["?([^"\]]+)"?\]', text, re.M)
    facts["volume"] = m.group(1) if m else None
    m = re.search(r"^EXPOSE (\d+)", text, re.M)
    facts["port"] = int(m.group(1)) if m else None
    m = re.search(r"useradd --uid (\d+)", text)
    facts["uid"] = int(m.group(1)) if m else None
    m = re.search(r"groupadd --gid (\d+)", text)
    facts["gid"] = int(m.group(1)) if m else None
    m = re.search(r"KVNODE_DATA_DIR=(\S+)", text)
    facts["data_dir"] = m.group(1) if m else None
    return facts


def json6902(doc, ops):
    """`doc` with the RFC 6902 operations `ops` (add, replace) applied, as kustomize does."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        try:
            for p in parts[:-1]:
                parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        except (KeyError, IndexError, ValueError):
            check(False, f"patch path {op['path']} does not exist")
            continue
        last = parts[-1]
        if op["op"] == "add" and isinstance(parent, list):
            if last == "-":
                parent.append(op["value"])
            else:
                parent.insert(int(last), op["value"])
        elif op["op"] == "add":
            parent[last] = op["value"]
        elif op["op"] == "replace":
            index = int(last) if isinstance(parent, list) else last
            exists = index < len(parent) if isinstance(parent, list) else index in parent
            if check(exists, f"patch replaces {op['path']}, which does not exist"):
                parent[index] = op["value"]
        else:
            check(False, f"patch operation {op['op']} is not supported here")
    return doc


def wait_cluster_status(kvctl_argv, env, proc, log_path):
    """Polls `kvctl ... --json cluster status` until it answers (30 s); its JSON or None."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        out = subprocess.run([*kvctl_argv, "--timeout=3s", "--json", "cluster", "status"],
                             capture_output=True, text=True, timeout=30, env=env)
        if out.returncode == 0:
            return json.loads(out.stdout)
        time.sleep(0.2)
    check(False, f"kvnode with the manifests' settings did not serve: "
                 f"{open(log_path).read()[-2000:]}")
    return None


def start_pod_node(args, env, tmp, name):
    """Starts kvnode through the entrypoint with a pod's `env`, on free loopback ports with data
    and log in `tmp`. Returns (process, port, metrics port, log path)."""
    port, metrics_port = free_port(), free_port()
    env = dict(env)
    env.update({"KVNODE_LISTEN": f"127.0.0.1:{port}",
                "KVNODE_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
                "KVNODE_DATA_DIR": os.path.join(tmp, f"data-{name}"), "KV_NODE_BINARY": args.kvnode,
                "PATH": os.environ.get("PATH", "")})
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    log_path = os.path.join(tmp, f"kvnode-{name}.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["sh", ENTRYPOINT], env=env, stdout=log, stderr=log)
    return proc, port, metrics_port, log_path


def stop_pod_node(proc, log_path):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    check(rc == 0, f"kvnode exited {rc} after SIGTERM, expected 0: {open(log_path).read()[-2000:]}")


def kustomize_statefulset(directory):
    """The StatefulSet `kubectl kustomize DIRECTORY` renders, or None without kubectl here."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    try:
        out = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"note: kubectl kustomize did not run ({e}); the patch is checked as applied here")
        return None
    if not check(out.returncode == 0, f"kubectl kustomize {directory} failed: {out.stderr[-1000:]}"):
        return None
    docs = [d for d in yaml.safe_load_all(out.stdout) if d and d.get("kind") == "StatefulSet"]
    check(len(docs) == 1, f"kubectl kustomize {directory} rendered {len(docs)} StatefulSets")
    return docs[0] if docs else None


def check_tls_overlay(args, sts, configmaps, conf_text, pod_name):
    """deploy/k8s-tls: the patch applied to the StatefulSet, checked, and run with real files."""
    with open(os.path.join(K8S_TLS, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    check(kustomization.get("resources") == ["../k8s"],
          f"deploy/k8s-tls must build on deploy/k8s: resources {kustomization.get('resources')}")
    patches = kustomization.get("patches", [])
    check(len(patches) == 1 and patches[0].get("target", {}).get("kind") == "StatefulSet"
          and patches[0]["target"].get("name") == sts["metadata"]["name"],
          f"deploy/k8s-tls must patch the StatefulSet {sts['metadata']['name']}: {patches}")
    if failures:
        return
    with open(os.path.join(K8S_TLS, patches[0]["path"])) as f:
        patched = json6902(sts, yaml.safe_load(f))
    # Where kubectl is installed, kustomize itself must render the same StatefulSet.
    rendered = kustomize_statefulset(K8S_TLS)
    if rendered is not None:
        check(rendered == patched, "kubectl kustomize renders another StatefulSet than the patch "
                                   "applied here")
        print("kubectl kustomize deploy/k8s-tls renders the StatefulSet checked here")
    pod = patched["spec"]["template"]["spec"]
    container = pod["containers"][0]
    probes = {}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        p = container.get(probe) or {}
        command = p.get("exec", {}).get("command", [])
        check(command[:1] == ["kvprobe"], f"TLS {probe} does not run kvprobe: {p}")
        probes[probe] = command
    env = pod_env(container, configmaps, pod_name)
    files = {k: env.get(k, "") for k in ("KVNODE_TLS_CA_FILE", "KVNODE_TLS_CERT_FILE",
                                         "KVNODE_TLS_KEY_FILE", "KV_TLS_CA", "KV_TLS_CERT",
                                         "KV_TLS_KEY")}
    mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
    secret_dirs = {}
    for v in pod.get("volumes", []):
        if "secret" in v and v["name"] in mounts:
            secret_dirs[mounts[v["name"]]["mountPath"]] = v["secret"]["secretName"]
            check(mounts[v["name"]].get("readOnly") is True, f"secret volume {v['name']} is writable")
    for k, path in files.items():
        check(os.path.dirname(path) in secret_dirs, f"{k}={path} is not in a mounted Secret")
    check(env.get("KV_PROBE_TLS_SERVER_NAME") ==
          f"{pod_name}.{patched['spec']['serviceName']}.{NAMESPACE}.svc.cluster.local",
          f"KV_PROBE_TLS_SERVER_NAME {env.get('KV_PROBE_TLS_SERVER_NAME')} is not the pod's DNS name")
    if failures:
        return

    with tempfile.TemporaryDirectory(prefix="kvk8stls") as tmp:
        made = os.path.join(tmp, "made")
        out = subprocess.run(["bash", os.path.join(REPO, "deploy", "make-tls-certs.sh"), made,
                              "--k8s", NAMESPACE], capture_output=True, text=True, timeout=60)
        if not check(out.returncode == 0, f"make-tls-certs.sh --k8s failed: {out.stderr}"):
            return
        # The Secret's keys, as `kubectl create secret generic kvnode-tls --from-file=...` makes them.
        secret = os.path.join(tmp, "secret")
        os.mkdir(secret)
        for key, source in (("ca.crt", "ca.pem"), ("tls.crt", "kvnode.pem"),
                            ("tls.key", "kvnode.key")):
            shutil.copyfile(os.path.join(made, source), os.path.join(secret, key))
        for k, path in files.items():
            env[k] = os.path.join(secret, os.path.relpath(path, os.path.dirname(path)))
            check(os.path.exists(env[k]), f"{k}: the Secret has no key {os.path.basename(path)}")
        conf_file = os.path.join(tmp, "kvnode.conf")
        with open(conf_file, "w") as f:
            f.write(conf_text or "")
        env["KVNODE_CONFIG"] = conf_file
        proc, port, _, log_path = start_pod_node(args, env, tmp, "tls")
        try:
            client_env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0",
                          **{k: env[k] for k in ("KV_TLS_CA", "KV_TLS_CERT", "KV_TLS_KEY")}}
            status = wait_cluster_status([args.kvctl, f"--endpoints=127.0.0.1:{port}"],
                                         client_env, proc, log_path)
            if status:
                check(status.get("node_id") == pod_name, f"TLS node id {status.get('node_id')}")
                check("tls=mutual" in open(log_path).read(), "the TLS pod does not log tls=mutual")
            # The probes' own command, with the pod's environment (KVNODE_LISTEN remapped).
            probe_env = {**os.environ, **env, "KVNODE_LISTEN": f"0.0.0.0:{port}",
                         "ASAN_OPTIONS": "detect_leaks=0"}
            for probe, command in probes.items():
                out = subprocess.run([args.kvprobe, *command[1:]], env=probe_env,
                                     capture_output=True, text=True, timeout=30)
                check(out.returncode == 0 and "SERVING" in out.stdout,
                      f"TLS {probe} {command} failed: {out.returncode} {out.stdout}{out.stderr}")
            plain = subprocess.run([args.kvctl, f"--endpoints=127.0.0.1:{port}", "--timeout=2s",
                                    "cluster", "status"], capture_output=True, text=True,
                                   timeout=60, env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
            check(plain.returncode == 3, f"plaintext kvctl not refused by the TLS pod: "
                                         f"{plain.returncode} {plain.stdout}{plain.stderr}")
            # Admin calls: the pod's own certificate (kubectl exec ... kvctl) and the operators'
            # kv-admin one are let in (an unknown operation: NOT_FOUND), the applications'
            # client certificate is not.
            admins = f"*.kvnode.{NAMESPACE}.svc.cluster.local,kv-admin"
            check(f"tls_admin_names={admins}" in open(log_path).read(),
                  f"the TLS pod does not log tls_admin_names={admins}")
            for name, cert, code, want in (("pod", None, 1, "NOT_FOUND"),
                                           ("admin", "admin", 1, "NOT_FOUND"),
                                           ("client", "client", 3, "PERMISSION_DENIED")):
                cert_env = dict(client_env)
                if cert is not None:
                    cert_env["KV_TLS_CERT"] = os.path.join(made, f"{cert}.pem")
                    cert_env["KV_TLS_KEY"] = os.path.join(made, f"{cert}.key")
                out = subprocess.run([args.kvctl, f"--endpoints=127.0.0.1:{port}", "--timeout=10s",
                                      "operation", "cancel", f"{pod_name}:1-1"], capture_output=True,
                                     text=True, timeout=60, env=cert_env)
                check(out.returncode == code and want in out.stderr,
                      f"operation cancel with the {name} certificate: exit {out.returncode}, "
                      f"expected {want}: {out.stdout}{out.stderr}")
        finally:
            stop_pod_node(proc, log_path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kvnode", required=True)
    parser.add_argument("--kvctl", required=True)
    parser.add_argument("--kvprobe", required=True)
    args = parser.parse_args()

    kinds = load_manifests()
    for kind in ("StatefulSet", "Service", "PodDisruptionBudget", "ConfigMap"):
        check(kind in kinds, f"no {kind} in deploy/k8s")
    if failures:
        return 1
    sts = kinds["StatefulSet"][0]
    spec = sts["spec"]
    tmpl = spec["template"]
    labels = tmpl["metadata"]["labels"]
    pod = tmpl["spec"]
    container = pod["containers"][0]
    configmaps = {c["metadata"]["name"]: c for c in kinds["ConfigMap"]}
    services = {s["metadata"]["name"]: s for s in kinds["Service"]}
    image = dockerfile_facts()

    # --- identity and DNS
    headless = services.get(spec.get("serviceName"))
    check(headless is not None, f"serviceName {spec.get('serviceName')} names no Service")
    if headless:
        check(headless["spec"].get("clusterIP") == "None", "the StatefulSet's service is not headless")
        check(headless["spec"].get("publishNotReadyAddresses") is True,
              "headless service must publish not-ready addresses (peers find each other while starting)")
    for s in services.values():
        check(subset(s["spec"].get("selector"), labels), f"Service {s['metadata']['name']} selects no pod")
    check(subset(spec["selector"]["matchLabels"], labels), "StatefulSet selector does not match its pods")

    # --- ports
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    check("grpc" in ports, "container has no port named grpc")
    port = ports.get("grpc")
    check(port == image["port"], f"containerPort {port} != EXPOSE {image['port']} of the Dockerfile")
    for s in services.values():
        for p in s["spec"]["ports"]:
            check(p.get("targetPort") in ("grpc", port),
                  f"Service {s['metadata']['name']} targets {p.get('targetPort')}, not the grpc port")

    # --- probes: native gRPC probes on the serving port (grpc.health.v1)
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        p = container.get(probe)
        if probe == "startupProbe" and p is None:
            continue
        check(p is not None, f"no {probe}")
        if p:
            check("grpc" in p and p["grpc"].get("port") == port,
                  f"{probe} is not a gRPC probe on port {port}: {p}")
            check("service" not in p["grpc"] or p["grpc"]["service"] == "",
                  f"{probe} asks for a service name kvnode does not register")

    # --- config: ConfigMap file mounted where KVNODE_CONFIG points, and parsed by kvnode below
    env0 = pod_env(container, configmaps, f"{sts['metadata']['name']}-0")
    mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    conf_path = env0.get("KVNODE_CONFIG", "")
    conf_text = None
    for name, v in volumes.items():
        if "configMap" in v and name in mounts:
            cm = configmaps.get(v["configMap"]["name"])
            check(cm is not None, f"volume {name}: no ConfigMap {v['configMap']['name']}")
            for item in v["configMap"].get("items", []):
                path = os.path.join(mounts[name]["mountPath"], item["path"])
                if path == conf_path and cm:
                    conf_text = cm["data"].get(item["key"])
    check(conf_text is not None, f"KVNODE_CONFIG={conf_path} is not a mounted ConfigMap file")
    conf = parse_conf(conf_text or "")

    # --- data volume
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    data_mounts = [m for m in mounts.values() if m["name"] in claims]
    check(len(data_mounts) == 1, f"expected one volumeClaimTemplate mounted, got {claims}")
    if data_mounts:
        mount = data_mounts[0]["mountPath"]
        check(mount == image["volume"], f"data volume at {mount}, the image's VOLUME is {image['volume']}")
        data_dir = env0.get("KVNODE_DATA_DIR", image["data_dir"])
        check(data_dir.startswith(mount.rstrip("/") + "/"),
              f"KVNODE_DATA_DIR {data_dir} is not on the volume {mount}")
    check(str(env0.get("KVNODE_LISTEN", "")).endswith(f":{port}"),
          f"KVNODE_LISTEN {env0.get('KVNODE_LISTEN')} is not the container port {port}")
    check(env0.get("KV_PEER_PORT", "7700") == str(port), "KV_PEER_PORT differs from the grpc port")
    metrics_port = ports.get("metrics")
    check(str(env0.get("KVNODE_METRICS_LISTEN", "")).endswith(f":{metrics_port}"),
          f"KVNODE_METRICS_LISTEN {env0.get('KVNODE_METRICS_LISTEN')} is not the container port "
          f"named metrics ({metrics_port})")
    annotations = tmpl["metadata"].get("annotations", {})
    check(annotations.get("prometheus.io/port") == str(metrics_port),
          f"prometheus.io/port {annotations.get('prometheus.io/port')} != metrics port {metrics_port}")

    # --- security context agrees with the image's user; the root filesystem may be read-only
    psc = pod.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, "runAsNonRoot is not set")
    check(psc.get("runAsUser") == image["uid"], f"runAsUser {psc.get('runAsUser')} != image uid {image['uid']}")
    check(psc.get("fsGroup") == image["gid"], f"fsGroup {psc.get('fsGroup')} != image gid {image['gid']}")

    # --- size, quorum and disruption budget
    replicas = spec["replicas"]
    check(env0.get("KV_PEER_COUNT") == str(replicas),
          f"KV_PEER_COUNT ({env0.get('KV_PEER_COUNT')}) != spec.replicas ({replicas})")
    n = int(conf.get("replication_factor", 3))
    w = int(conf.get("write_quorum", 2))
    check(n <= replicas, f"replication_factor {n} > {replicas} pods")
    pdb = kinds["PodDisruptionBudget"][0]
    check(subset(pdb["spec"]["selector"]["matchLabels"], labels), "PDB selects no pod")
    max_unavailable = pdb["spec"].get("maxUnavailable")
    check(isinstance(max_unavailable, int) and 1 <= max_unavailable <= n - w,
          f"PDB maxUnavailable {max_unavailable}: must be 1..N-W ({n - w}) so that W replicas stay up")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    drain = seconds(conf.get("shutdown_drain", "500ms")) + seconds(conf.get("shutdown_grace", "10s"))
    check(grace > drain, f"terminationGracePeriodSeconds {grace} <= shutdown_drain + shutdown_grace ({drain}s)")

    # --- every pod: node id = pod name, the same peer list, resolvable under the headless service
    peer_lists = set()
    set_name = sts["metadata"]["name"]
    domain = f"{spec['serviceName']}.{NAMESPACE}.svc.cluster.local"
    expected_peers = ",".join(f"{set_name}-{i}={set_name}-{i}.{domain}:{port}" for i in range(replicas))
    for i in range(replicas):
        name = f"{set_name}-{i}"
        flags = entrypoint(pod_env(container, configmaps, name))
        check(flags.get("node_id") == name, f"pod {name}: node_id {flags.get('node_id')}")
        check(flags.get("peers") == expected_peers, f"pod {name}: peers {flags.get('peers')} != {expected_peers}")
        check(flags.get("config") == conf_path, f"pod {name}: --config {flags.get('config')}")
        peer_lists.add(flags.get("peers"))
    check(len(peer_lists) == 1, "pods disagree on the peer list")
    # A pod beyond cluster-size (StatefulSet scaled without the ConfigMap) must refuse to start.
    over = subprocess.run(["sh", ENTRYPOINT], capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ.get("PATH", ""), "KV_ENTRYPOINT_PRINT": "1",
                               **pod_env(container, configmaps, f"{set_name}-{replicas}")})
    check(over.returncode == 2 and "KV_PEER_COUNT" in over.stderr,
          f"pod {set_name}-{replicas} (beyond cluster-size) was not refused: {over.returncode} {over.stderr}")

    # --- the real kvnode with pod 1's settings and the ConfigMap's file
    pod_name = f"{set_name}-1"
    with tempfile.TemporaryDirectory(prefix="kvk8s") as tmp:
        conf_file = os.path.join(tmp, "kvnode.conf")
        with open(conf_file, "w") as f:
            f.write(conf_text or "")
        env = pod_env(container, configmaps, pod_name)
        env["KVNODE_CONFIG"] = conf_file
        proc, local_port, local_metrics_port, log_path = start_pod_node(args, env, tmp, "plain")
        try:
            status = wait_cluster_status([args.kvctl, f"--endpoints=127.0.0.1:{local_port}"],
                                         None, proc, log_path)
            if status:
                check(status.get("node_id") == pod_name, f"node id {status.get('node_id')} != {pod_name}")
                members = sorted((m["node_id"], m["address"]) for m in status.get("members", []))
                want = sorted((f"{set_name}-{i}", f"{set_name}-{i}.{domain}:{port}")
                              for i in range(replicas))
                check(members == want, f"members {members} != {want}")
                check(status.get("replication_factor") == n and status.get("default_w") == w,
                      f"N/W {status.get('replication_factor')}/{status.get('default_w')} != config {n}/{w}")
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{local_metrics_port}/metrics", timeout=10) as r:
                        metrics = r.read().decode()
                except OSError as e:
                    metrics = f"(scrape failed: {e})"
                check(f'kv_node_info{{' in metrics and f'node_id="{pod_name}"' in metrics,
                      f"the metrics server does not describe {pod_name}: {metrics[:500]}")
        finally:
            stop_pod_node(proc, log_path)

    # --- the TLS overlay, run the same way
    check_tls_overlay(args, sts, configmaps, conf_text, pod_name)

    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print(f"OK: deploy/k8s agrees with kvnode: {replicas} pods {set_name}-0..{replicas - 1}, "
          f"port {port}, gRPC probes, volume {image['volume']}, N={n} W={w}, PDB maxUnavailable "
          f"{max_unavailable}; kvnode started with pod {pod_name}'s settings and stopped cleanly; "
          f"the TLS overlay's pod served mutual TLS and its kvprobe probes reported SERVING")
    return 0


if __name__ == "__main__":
    sys.exit(main())
