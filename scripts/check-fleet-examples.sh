#!/usr/bin/env bash
# Checks the fleet examples in docs/fleet offline (make test runs it):
# - kubernetes.yaml: every document loads into the official `kubernetes` Python client's model
#   of its kind and serialises back unchanged (a misspelt or misplaced field is lost on the way
#   and reported), and the pieces fit together: the readiness probe is GET /healthz on the
#   status port, the liveness probe is not /healthz (a drain would restart the pod), Prometheus
#   annotations name the status port, the Service is UDP and targets the listener's port, the
#   ConfigMap is mounted where --config points;
# - keepalived.conf: balanced braces, a virtual_server with protocol UDP and lb_algo mh or sh,
#   every real_server health-checked with HTTP_GET /healthz (status 200) on the status port;
# - the udprelayd configurations (docs/fleet/udprelayd.ini, the ConfigMap's) pass
#   `udprelayd --check-config` when a binary is given.
# Usage: scripts/check-fleet-examples.sh [path/to/udprelayd]
# Needs PyYAML and kubernetes==37.0.2 (scripts/install-deps.sh test puts them in .build/python).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$root/.build/python${PYTHONPATH:+:$PYTHONPATH}"
exec /usr/bin/python3 - "$root/docs/fleet" "${1:-}" <<'PY'
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml
from kubernetes import client

fleet, binary = sys.argv[1], sys.argv[2]
problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def ini_ports(text, where):
    """The [status] listen port and the listen ports of the listeners."""
    status, listeners, section = None, [], None
    for line in text.splitlines():
        line = line.split(";")[0].strip()
        if line.startswith("["):
            section = line
        elif line.startswith("listen") and "=" in line:
            port = int(line.split("=", 1)[1].strip().rsplit(":", 1)[1])
            if section == "[status]":
                status = port
            else:
                listeners.append(port)
    if status is None or not listeners:
        problem(where, "needs [status] listen and a listener with listen")
    return status, listeners


def check_config(text, where):
    if not binary:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".ini") as f:
        f.write(text)
        f.flush()
        r = subprocess.run([binary, "--check-config", "--config", f.name], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            problem(where, f"udprelayd --check-config failed:\n{r.stdout}{r.stderr}")


# --- kubernetes.yaml -------------------------------------------------------------------------
MODELS = {
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "DaemonSet"): "V1DaemonSet",
    ("apps/v1", "Deployment"): "V1Deployment",
}
api = client.ApiClient()


def compare(original, back, path):
    if isinstance(original, dict):
        if not isinstance(back, dict):
            return problem(path, f"is not an object in the model: {back!r}")
        for k, v in original.items():
            if k not in back:
                problem(f"{path}.{k}", "is not a field of the Kubernetes model (misspelt or misplaced)")
            else:
                compare(v, back[k], f"{path}.{k}")
    elif isinstance(original, list):
        if not isinstance(back, list) or len(back) != len(original):
            return problem(path, "list changed in the model")
        for i, (a, b) in enumerate(zip(original, back)):
            compare(a, b, f"{path}[{i}]")
    elif original != back or type(original) is not type(back):
        problem(path, f"{original!r} became {back!r} in the model (wrong type?)")


k8s_path = os.path.join(fleet, "kubernetes.yaml")
with open(k8s_path) as f:
    docs = [d for d in yaml.safe_load_all(f) if d is not None]
objects = {}
for i, doc in enumerate(docs):
    where = f"{k8s_path} document {i + 1}"
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in MODELS:
        problem(where, f"unexpected apiVersion/kind {key}")
        continue
    try:
        model = api.deserialize(json.dumps(doc), MODELS[key], "application/json")
    except (ValueError, TypeError) as e:
        problem(where, f"does not load into {MODELS[key]}: {e}")
        continue
    compare(doc, api.sanitize_for_serialization(model), f"{where} ({doc['kind']})")
    objects[doc["kind"]] = model

config_map = objects.get("ConfigMap")
workload = objects.get("DaemonSet") or objects.get("Deployment")
service = objects.get("Service")
if not (config_map and workload and service):
    problem(k8s_path, "needs a ConfigMap, a DaemonSet or Deployment, and a Service")
else:
    ini = (config_map.data or {}).get("udprelayd.ini", "")
    status_port, listen_ports = ini_ports(ini, f"{k8s_path} ConfigMap udprelayd.ini")
    check_config(ini, f"{k8s_path} ConfigMap udprelayd.ini")
    pod = workload.spec.template
    c = pod.spec.containers[0]
    ports = {p.name: p for p in c.ports or []}

    def port_number(p):
        return ports[p].container_port if isinstance(p, str) and p in ports else p

    probe = c.readiness_probe.http_get if c.readiness_probe else None
    if not probe or probe.path != "/healthz" or port_number(probe.port) != status_port:
        problem(k8s_path, f"the readiness probe must be GET /healthz on the status port {status_port}")
    live = c.liveness_probe
    if live and live.http_get and live.http_get.path.startswith("/healthz"):
        problem(k8s_path, "the liveness probe must not be /healthz: a draining pod would be restarted")
    notes = pod.metadata.annotations or {}
    if notes.get("prometheus.io/scrape") != "true" or notes.get("prometheus.io/port") != str(status_port):
        problem(k8s_path, f"pod annotations must say prometheus.io/scrape: \"true\" and prometheus.io/port: \"{status_port}\"")
    if workload.spec.selector.match_labels.items() - (pod.metadata.labels or {}).items():
        problem(k8s_path, "the workload's selector does not match its pod labels")
    if (service.spec.selector or {}).items() - (pod.metadata.labels or {}).items():
        problem(k8s_path, "the Service's selector does not match the pod labels")
    for p in service.spec.ports:
        if p.protocol != "UDP":
            problem(k8s_path, f"Service port {p.name} must be protocol UDP")
        target = port_number(p.target_port)
        if target not in listen_ports or (isinstance(p.target_port, str) and ports[p.target_port].protocol != "UDP"):
            problem(k8s_path, f"Service port {p.name} must target a UDP listener port of the configuration ({listen_ports})")
    mounts = {m.name: m.mount_path for m in c.volume_mounts or []}
    volume = next((v for v in pod.spec.volumes or [] if v.config_map and v.config_map.name == config_map.metadata.name), None)
    args = c.args or []
    config_arg = args[args.index("--config") + 1] if "--config" in args else "/etc/udprelayd/udprelayd.ini"
    if not volume or os.path.join(mounts.get(volume.name, "?"), "udprelayd.ini") != config_arg:
        problem(k8s_path, f"the ConfigMap must be mounted so that --config {config_arg} is its udprelayd.ini")

# --- keepalived.conf ----------------------------------------------------------------------------
ka_path = os.path.join(fleet, "keepalived.conf")
ini_path = os.path.join(fleet, "udprelayd.ini")
with open(ini_path) as f:
    ini = f.read()
status_port, listen_ports = ini_ports(ini, ini_path)
check_config(ini, ini_path)

with open(ka_path) as f:
    lines = [re.sub(r"[!#].*", "", line) for line in f]
# keepalived is line-oriented: a line is a statement ("key value..."), or opens a block when
# it ends in "{" (its words are the block's header), or is a "}" closing one. A block is a
# list of (words, children); a plain statement has children None.
tree, stack = [], []
top = tree
for number, line in enumerate(lines, 1):
    words = []
    for t in re.findall(r"[{}]|[^\s{}]+", line):
        if t == "{":
            block = (words, [])
            top.append(block)
            stack.append(top)
            top, words = block[1], []
        elif t == "}":
            if words:
                top.append((words, None))
                words = []
            if not stack:
                problem(f"{ka_path}:{number}", "this '}' closes nothing")
                continue
            top = stack.pop()
        else:
            words.append(t)
    if words:
        top.append((words, None))
if stack:
    problem(ka_path, f"{len(stack)} '{{' never closed")


def flat(block):
    """The block's own plain statements, one string (not those of its child blocks)."""
    return " ".join(w for words, children in block if children is None for w in words)


def blocks(block, name):
    """(arguments, body) of the child blocks whose header starts with `name`."""
    return [(words[1:], children) for words, children in block if children is not None and words[:1] == [name]]


servers = blocks(tree, "virtual_server")
if not servers:
    problem(ka_path, "no virtual_server block")
for args, body in servers:
    where = f"{ka_path} virtual_server {' '.join(args)}"
    plain = flat(body) + " "
    if "protocol UDP " not in plain:
        problem(where, "needs protocol UDP")
    if not re.search(r"\blb_algo (mh|sh) ", plain):
        problem(where, "needs lb_algo mh (Maglev) or sh (source hashing)")
    reals = blocks(body, "real_server")
    if len(reals) < 2:
        problem(where, f"needs at least two real_server blocks, has {len(reals)}")
    for rargs, rbody in reals:
        rwhere = f"{where} real_server {' '.join(rargs)}"
        if len(rargs) != 2 or int(rargs[1]) not in listen_ports:
            problem(rwhere, f"its port must be a listener port of {ini_path} ({listen_ports})")
        checks = blocks(rbody, "HTTP_GET")
        if len(checks) != 1:
            problem(rwhere, "needs one HTTP_GET health check")
            continue
        check = checks[0][1]
        urls = blocks(check, "url")
        if not urls or not re.search(r"\bpath /healthz(\?listener=\S+)? ", flat(urls[0][1]) + " ") or "status_code 200 " not in flat(urls[0][1]) + " ":
            problem(rwhere, "HTTP_GET needs url { path /healthz status_code 200 }")
        if f"connect_port {status_port} " not in flat(check) + " ":
            problem(rwhere, f"HTTP_GET needs connect_port {status_port} ([status] listen of {ini_path})")

if problems:
    print("check-fleet-examples: FAILED", file=sys.stderr)
    for p in problems:
        print("  " + p, file=sys.stderr)
    sys.exit(1)
print(f"check-fleet-examples: {len(docs)} Kubernetes objects load into the client's models; "
      f"keepalived.conf has {len(servers)} UDP virtual server(s) checked on /healthz"
      + ("; configurations pass --check-config" if binary else ""))
PY
