#!/usr/bin/env python3
"""A fleet of three udprelayd instances behind equal-cost multipath routing, in network
namespaces this script creates (198.18.0.0/15 addresses only inside them) and removes.

    clients (ns c) -- router (ns r, ECMP on the 4-tuple) --+-- instance 1 (ns i1) --+
                                                           +-- instance 2 (ns i2) --+-- upstreams (ns u)
                                                           +-- instance 3 (ns i3) --+

Each instance holds the service address 198.18.0.53 and runs balance = hash over the same
four upstreams (each instance lists them in another order). 200 clients send through the
service address and record which upstream answered. Then instance 1 is drained (SIGUSR1: its
/healthz must answer 503 while its clients go on in their sessions) and its route withdrawn, and instance 2 is
killed and its route withdrawn, as a routing daemon would: every client must still reach the
same upstream as before, and every datagram must be answered; and the drained instance's
sessions, no longer routed to, must finish (expire) on their own.

Usage (root): fleet_ecmp.py /path/to/udprelayd. Exit 0 when every check passed.
"""
import json
import os
import select
import subprocess
import sys
import tempfile
import time

binary = sys.argv[1]
tag = f"udpf{os.getpid()}"
ns = {k: f"{tag}{k}" for k in ["c", "r", "i1", "i2", "i3", "u"]}
SERVICE = "198.18.0.53"
UPSTREAMS = [f"198.18.3.{h}" for h in range(2, 6)]
CLIENTS = 200
started = []  # processes this script started (killed by PID at the end)
failures = []


SESSION_TIMEOUT = 5


def sh(*args, netns=None, check=True):
    cmd = (["ip", "netns", "exec", ns[netns]] if netns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


def link(a, a_if, a_addr, b, b_if, b_addr):
    sh("ip", "link", "add", a_if, "netns", ns[a], "type", "veth", "peer", "name", b_if, "netns", ns[b])
    sh("ip", "addr", "add", a_addr, "dev", a_if, netns=a)
    sh("ip", "addr", "add", b_addr, "dev", b_if, netns=b)
    sh("ip", "link", "set", a_if, "up", netns=a)
    sh("ip", "link", "set", b_if, "up", netns=b)


def setup():
    for n in ns.values():
        sh("ip", "netns", "add", n)
    for k in ns:
        sh("ip", "link", "set", "lo", "up", netns=k)
    for key, value in [("net.ipv4.ip_forward", "1"), ("net.ipv4.fib_multipath_hash_policy", "1"),
                       ("net.ipv4.conf.all.rp_filter", "0"), ("net.ipv4.conf.default.rp_filter", "0")]:
        sh("sysctl", "-qw", f"{key}={value}", netns="r")
    link("c", "eth0", "198.18.1.2/24", "r", "toc", "198.18.1.1/24")
    sh("ip", "route", "add", "default", "via", "198.18.1.1", netns="c")
    link("u", "eth0", "198.18.3.2/24", "r", "tou", "198.18.3.1/24")
    for a in UPSTREAMS[1:]:
        sh("ip", "addr", "add", f"{a}/24", "dev", "eth0", netns="u")
    sh("ip", "route", "add", "default", "via", "198.18.3.1", netns="u")
    for i in (1, 2, 3):
        k = f"i{i}"
        sh("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", netns=k)
        link(k, "eth0", f"198.18.2{i}.2/24", "r", f"to{k}", f"198.18.2{i}.1/24")
        sh("ip", "addr", "add", f"{SERVICE}/32", "dev", "lo", netns=k)
        sh("ip", "route", "add", "default", "via", f"198.18.2{i}.1", netns=k)
    route([1, 2, 3])


def route(instances):
    hops = []
    for i in instances:
        hops += ["nexthop", "via", f"198.18.2{i}.2"]
    sh("ip", "route", "replace", f"{SERVICE}/32", *hops, netns="r")


def start(k, argv, **kw):
    p = subprocess.Popen(["ip", "netns", "exec", ns[k]] + argv, **kw)
    started.append(p)
    return p


UPSTREAM_SERVER = f"""
import select, socket
socks = []
for i, a in enumerate({UPSTREAMS!r}):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a, 53))
    socks.append((s, b"u%d:" % i))
print("ready", flush=True)
while True:
    for s in select.select([s for s, _ in socks], [], [])[0]:
        data, peer = s.recvfrom(2048)
        s.sendto(dict(socks)[s] + data, peer)
"""

CLIENT = f"""
import json, select, socket, sys, time
socks = []
for i in range({CLIENTS}):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("198.18.1.2", 0))
    socks.append(s)
index = {{s.fileno(): i for i, s in enumerate(socks)}}
print("ready", flush=True)
for line in sys.stdin:
    name = line.strip()
    answers = [None] * len(socks)
    for i, s in enumerate(socks):
        s.sendto(("c%d-%s" % (i, name)).encode(), ("{SERVICE}", 5353))
    deadline = time.monotonic() + 5
    while None in answers and time.monotonic() < deadline:
        for s in select.select(socks, [], [], max(0, deadline - time.monotonic()))[0]:
            data = s.recv(2048).decode()
            upstream, _, payload = data.partition(":")
            i = index[s.fileno()]
            if payload == "c%d-%s" % (i, name):
                answers[i] = upstream
    print(json.dumps(answers), flush=True)
"""


def healthz(k):
    out = sh("curl", "-s", "-o", "/dev/stderr", "-w", "%{http_code}", "--max-time", "3",
             "http://127.0.0.1:9180/healthz", netns=k, check=False)
    return int(out or 0)


def session_count(k, which):
    out = sh("curl", "-s", "--max-time", "3", "http://127.0.0.1:9180/status", netns=k, check=False)
    try:
        return json.loads(out)["listeners"][0]["sessions"][which]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def sessions_created(k):
    return session_count(k, "created")


def wait_for(what, check, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    failures.append(f"timed out waiting for {what}")
    return False


def main():
    setup()
    work = tempfile.mkdtemp(prefix="udprelayd-fleet-")
    upstream = start("u", [sys.executable, "-c", UPSTREAM_SERVER], stdout=subprocess.PIPE, text=True)
    assert upstream.stdout.readline().strip() == "ready"
    daemons = {}
    for i in (1, 2, 3):
        order = UPSTREAMS[i - 1:] + UPSTREAMS[:i - 1]  # every instance lists them differently
        path = os.path.join(work, f"i{i}.ini")
        with open(path, "w") as f:
            f.write("[status]\nlisten = 127.0.0.1:9180\n[listener svc]\n"
                    f"listen = {SERVICE}:5353\nmode = balance\nbalance = hash\n"
                    f"upstream = {', '.join(a + ':53' for a in order)}\n"
                    # Short, so the drained instance's sessions are seen to finish.
                    f"session_timeout = {SESSION_TIMEOUT}s\n")
        log = open(os.path.join(work, f"i{i}.log"), "w")
        daemons[i] = start(f"i{i}", [binary, "--config", path], stdout=log, stderr=log)
    for i in (1, 2, 3):
        wait_for(f"instance {i} healthy", lambda: healthz(f"i{i}") == 200)
    clients = start("c", [sys.executable, "-c", CLIENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert clients.stdout.readline().strip() == "ready"

    def round_(name):
        clients.stdin.write(name + "\n")
        clients.stdin.flush()
        return json.loads(clients.stdout.readline())

    before = round_("start")
    lost = [i for i, a in enumerate(before) if a is None]
    if lost:
        failures.append(f"start: {len(lost)} of {CLIENTS} clients got no answer (first: {lost[:5]})")
    spread = {a: before.count(a) for a in set(before)}
    print(f"start: upstream shares {sorted(spread.items(), key=str)}")
    if len(spread) < 4:
        failures.append(f"200 clients reached only {spread}")

    def compare(name, answers):
        moved = [i for i, (a, b) in enumerate(zip(before, answers)) if a != b and b is not None]
        lost = [i for i, b in enumerate(answers) if b is None]
        print(f"{name}: {len(moved)} clients on another upstream, {len(lost)} unanswered")
        if moved:
            failures.append(f"{name}: {len(moved)} clients reached another upstream (first: {moved[:5]})")
        if lost:
            failures.append(f"{name}: {len(lost)} clients got no answer (first: {lost[:5]})")

    created = {i: sessions_created(f"i{i}") for i in (1, 2, 3)}
    print(f"start: sessions per instance {created}")
    if not all(created[i] for i in (1, 2, 3)):
        failures.append(f"the router did not spread the clients over the three instances: {created}")

    # Drain instance 1: /healthz fails, the instance still serves; then its route goes.
    daemons[1].send_signal(10)  # SIGUSR1
    wait_for("instance 1 draining", lambda: healthz("i1") == 503)
    compare("instance 1 draining, still routed", round_("draining"))
    # Its clients went on in the sessions they had: none was opened again.
    if sessions_created("i1") != created[1]:
        failures.append(f"instance 1 opened sessions again while draining: {created[1]} -> {sessions_created('i1')}")
    route([2, 3])
    compare("instance 1 withdrawn", round_("withdrawn"))
    # Kill instance 2 and withdraw its route.
    daemons[2].kill()
    daemons[2].wait(timeout=10)
    route([3])
    compare("instance 2 killed and withdrawn", round_("killed"))
    # Every client now goes through instance 3: those that came from 1 and 2 opened sessions there.
    moved_in = (sessions_created("i3") or 0) - (created[3] or 0)
    print(f"instance 3 took {moved_in} new sessions")
    if moved_in < (created[1] or 0) + (created[2] or 0):
        failures.append(f"instance 3 took {moved_in} new sessions, fewer than the {created[1]} + {created[2]} clients of 1 and 2")
    if healthz("i3") != 200:
        failures.append("instance 3 is not healthy at the end")
    # The drained instance's sessions, no longer routed to, finish on their own (idle timeout),
    # as a drained instance's sessions do before it is stopped.
    if wait_for("instance 1's sessions to finish", lambda: session_count("i1", "active") == 0, timeout=SESSION_TIMEOUT * 3 + 5):
        print(f"instance 1: its {created[1]} sessions finished ({session_count('i1', 'expired')} expired)")
    if (session_count("i1", "expired") or 0) < (created[1] or 0):
        failures.append(f"instance 1's sessions did not finish by expiring: {session_count('i1', 'expired')} of {created[1]}")


try:
    main()
finally:
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
    for n in ns.values():
        subprocess.run(["ip", "netns", "del", n], capture_output=True)

if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("fleet: every client kept its upstream through a drain, a withdrawal and a kill")
