#!/usr/bin/env python3
"""Bounded soak of a real udprelayd (make soak; about two minutes, loopback only).

Mixed echo and forward traffic from 1,000 client ports at a moderate rate, 50 reloads (one
listener changed every time, the others unchanged), the forward upstream killed and restarted,
a burst of malformed requests at the status endpoint, status clients that pipeline requests and
never read the answers, a flood from 64 rotating source addresses at a rate-limited echo
listener (it must get no more than the limit allows), and a client that opens a new forward
session every few milliseconds (session churn). At the end the daemon must be alive and
healthy, its RSS within 10% of the value a quarter into the main phase (the baseline), the unchanged echo listener must have
lost nothing, every listener's counters must balance (received = sent + dropped), and SIGTERM
during traffic must exit 0.

Usage: scripts/soak.py BINARY [--seconds N]   (SOAK_NO_PIPELINE=1 skips the pipelining clients)
"""
import argparse
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

CLIENTS = 1000
RATE = 2000            # datagrams per second over all clients (half echo, half forward)
RELOADS = int(os.environ.get("SOAK_RELOADS", "50"))
# The upstream binds below the kernel's ephemeral range (32768-60999 by default), so no session
# socket can take its port while it is down.
UPSTREAM_PORTS = range(20000, 30000)


def log(msg):
    print(f"soak: {msg}", flush=True)


class Upstream:
    """A loopback echo server standing in for the forward listener's upstream; can be killed and restarted on the same port."""

    def __init__(self):
        self.port = None
        self.sock = None
        self.stop = threading.Event()
        self.start()

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        if self.port is None:
            import random
            for port in random.sample(UPSTREAM_PORTS, 200):
                try:
                    s.bind(("127.0.0.1", port))
                    break
                except OSError:
                    continue
            else:
                raise SystemExit("soak: no free port for the upstream")
        else:
            s.bind(("127.0.0.1", self.port))
        self.port = s.getsockname()[1]
        s.settimeout(0.1)
        self.sock = s
        self.stop.clear()
        self.thread = threading.Thread(target=self.serve, args=(s,), daemon=True)
        self.thread.start()

    def serve(self, s):
        while not self.stop.is_set():
            try:
                data, peer = s.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                s.sendto(data, peer)
            except OSError:
                pass

    def kill(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


class Daemon:
    def __init__(self, binary, config_text):
        self.dir = tempfile.mkdtemp(prefix="udprelayd-soak-")
        self.config = os.path.join(self.dir, "udprelayd.ini")
        self.write(config_text)
        self.lines = []
        self.cv = threading.Condition()
        self.proc = subprocess.Popen([binary, "--config", self.config], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self.read, daemon=True).start()

    def write(self, text):
        tmp = self.config + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config)

    def read(self):
        for line in self.proc.stderr:
            with self.cv:
                self.lines.append(line.rstrip("\n"))
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def wait_for(self, pattern, start=0, timeout=30):
        deadline = time.time() + timeout
        with self.cv:
            i = start
            while True:
                while i < len(self.lines):
                    if re.search(pattern, self.lines[i]):
                        return i, self.lines[i]
                    i += 1
                left = deadline - time.time()
                if left <= 0 or self.proc.poll() is not None:
                    raise SystemExit(f"soak: FAIL: no log line matching {pattern!r}; log tail:\n" + "\n".join(self.lines[-30:]))
                self.cv.wait(left)

    def threads(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        return 0

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def field(line, key):
    m = re.search(r"(?:^| )" + re.escape(key) + r"=(\S+)", line)
    return m.group(1) if m else None


def config(upstream_port, generation):
    return f"""
[daemon]
log_level = info
[status]
listen = 127.0.0.1:0
[listener echo]
listen = 127.0.0.1:0
[listener fwd]
listen = 127.0.0.1:0
mode = forward
upstream = 127.0.0.1:{upstream_port}
max_fails = 3
fail_timeout = 2s
[listener churn]
listen = 127.0.0.1:0
max_datagram = {1000 + generation}
[listener limited]
listen = 0.0.0.0:0
rate_limit = {LIMITED_RATE}/s
rate_limit_sources = 16
"""


LIMITED_RATE = 100          # the rate-limited echo listener's rate_limit (burst: one second's worth)
ROTATING_SOURCES = 64       # 127.0.2.1 ... 127.0.2.64, more than its 16-entry source table
ROTATING_DATAGRAMS = 20000  # per flood, sent at about 10,000/s
PIPELINE_CONNECTIONS = 4
PIPELINE_BYTES = 4 << 20    # per connection: at most this much of pipelined requests, never read


def rotating_flood(port, result):
    """64 source addresses in turn at the rate-limited listener; counts the answers. A table of
    16 sources must not hand each newcomer a fresh burst: all of them together get about one
    source's rate (plus the first bursts)."""
    socks = []
    for k in range(ROTATING_SOURCES):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.2.{k + 1}", 0))
        s.setblocking(False)
        socks.append(s)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    answered = 0
    start = time.time()
    for n in range(ROTATING_DATAGRAMS):
        try:
            socks[n % ROTATING_SOURCES].sendto(b"r%d" % n, ("127.0.0.1", port))
        except OSError:
            pass
        if n % 100 == 99:
            for key, _ in sel.select(timeout=0):
                while True:
                    try:
                        key.fileobj.recv(2048)
                        answered += 1
                    except OSError:
                        break
            time.sleep(0.01)
    elapsed = time.time() - start
    idle_until = time.time() + 1.0
    while time.time() < idle_until:
        for key, _ in sel.select(timeout=0.1):
            while True:
                try:
                    key.fileobj.recv(2048)
                    answered += 1
                    idle_until = time.time() + 1.0
                except OSError:
                    break
    for s in socks:
        s.close()
    allowance = 16 * LIMITED_RATE + LIMITED_RATE + int(LIMITED_RATE * (elapsed + 2.5))
    result.append((answered, allowance, elapsed))
    log(f"rotating flood: {ROTATING_DATAGRAMS} datagrams from {ROTATING_SOURCES} sources in {elapsed:.1f} s, "
        f"{answered} answered (allowed at most {allowance})")


def pipeline_status(port, result):
    """Connections that pipeline GET /metrics and never read: the daemon must stop reading them
    (backpressure) instead of buffering answers without limit, and stay healthy. Bounded: at
    most PIPELINE_BYTES per connection, and at most 10 s. SOAK_NO_PIPELINE=1 skips it."""
    if not port:
        return
    if os.environ.get("SOAK_NO_PIPELINE"):
        result.append((0, True))
        return
    conns = []
    request = b"GET /metrics HTTP/1.1\r\nHost: soak\r\n\r\n"
    chunk = request * 256
    deadline = time.time() + 10
    for _ in range(PIPELINE_CONNECTIONS):
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=2)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            c.setblocking(False)
            conns.append([c, 0])
        except OSError:
            pass
    last_progress = time.time()
    while time.time() < deadline and any(sent < PIPELINE_BYTES for _, sent in conns):
        if time.time() - last_progress > 2:
            break  # every connection pushed back for 2 s: the daemon stopped reading them
        progressed = False
        for entry in conns:
            c, sent = entry
            if sent >= PIPELINE_BYTES:
                continue
            try:
                n = c.send(chunk)
                entry[1] += n
                progressed = progressed or n > 0
            except BlockingIOError:
                pass
            except OSError:
                entry[1] = PIPELINE_BYTES  # closed or reset by the daemon: fine
        if progressed:
            last_progress = time.time()
        else:
            time.sleep(0.05)
    total = sum(sent for _, sent in conns)
    # With the connections still open and unread, the endpoint must answer others.
    healthy = False
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            healthy = r.status == 200
    except Exception as e:
        log(f"pipelining: /healthz failed while pipelining connections were open: {e}")
    result.append((total, healthy))
    log(f"pipelining: {len(conns)} connections wrote {total >> 10} KiB of requests without reading; /healthz {'ok' if healthy else 'FAILED'}")
    for c, _ in conns:
        c.close()


def session_churn(port, stop, result, limit=3000):
    """A new client port every few milliseconds, one request each, then closed: sessions are
    opened and expire continuously. Bounded by `limit` sessions."""
    opened = answered = 0
    while not stop.is_set() and opened < limit:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.5)
        try:
            s.sendto(b"churn %d" % opened, ("127.0.0.1", port))
            opened += 1
            if s.recv(2048) == b"churn %d" % (opened - 1):
                answered += 1
        except OSError:
            pass
        s.close()
        time.sleep(0.01)
    result.append((opened, answered))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--seconds", type=float, default=75.0, help="main phase length")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))

    upstream = Upstream()
    d = Daemon(args.binary, config(upstream.port, 0))
    d.wait_for(r" ready")
    ports = {}
    for line in d.lines:
        if " listening " in line and field(line, "listener.name"):
            ports[field(line, "listener.name")] = int(field(line, "listener.address").rsplit(":", 1)[1])
    status_port = None
    for line in d.lines:
        if "status" in line and field(line, "address"):
            status_port = int(field(line, "address").rsplit(":", 1)[1])
    log(f"daemon pid {d.proc.pid}, ports {ports}, status port {status_port}")

    sel = selectors.DefaultSelector()
    socks = []
    for i in range(CLIENTS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, i)
    target = {i: ("127.0.0.1", ports["echo"] if i % 2 == 0 else ports["fwd"]) for i in range(CLIENTS)}
    sent = {"echo": 0, "fwd": 0}
    got = {"echo": 0, "fwd": 0}
    outstanding = set()
    lock = threading.Lock()
    stop_rx = threading.Event()
    fwd_window = {"sent": 0, "got": 0, "on": False}

    def receiver():
        while not stop_rx.is_set():
            for key, _ in sel.select(timeout=0.1):
                s = key.fileobj
                while True:
                    try:
                        data = s.recv(65535)
                    except BlockingIOError:
                        break
                    except OSError:
                        break
                    with lock:
                        if data in outstanding:
                            outstanding.discard(data)
                            kind = "echo" if data.startswith(b"e") else "fwd"
                            got[kind] += 1
                            if kind == "fwd" and fwd_window["on"]:
                                fwd_window["got"] += 1
                        else:
                            print(f"soak: FAIL: unexpected or duplicate reply {data[:40]!r}", flush=True)
                            os._exit(1)

    rx = threading.Thread(target=receiver, daemon=True)
    rx.start()

    seq = 0

    def send_for(seconds, tick=None):
        nonlocal seq
        start = time.time()
        next_at = start
        while time.time() - start < seconds:
            now = time.time()
            if tick:
                tick(now - start)
            if now < next_at:
                time.sleep(min(next_at - now, 0.005))
                continue
            i = seq % CLIENTS
            kind = "echo" if i % 2 == 0 else "fwd"
            payload = f"{kind[0]}:{i}:{seq}:".encode() + b"x" * (seq % 200)
            with lock:
                outstanding.add(payload)
                sent[kind] += 1
                if kind == "fwd" and fwd_window["on"]:
                    fwd_window["sent"] += 1
            try:
                socks[i].sendto(payload, target[i])
            except BlockingIOError:
                with lock:
                    outstanding.discard(payload)
                    sent[kind] -= 1
            seq += 1
            next_at += 1.0 / RATE

    # The warm-up goes through every kind of event once (reloads, the upstream killed and
    # restarted, a status abuse burst), so allocator high-water marks are reached before the
    # baseline is taken; the main phase then repeats them and must not grow RSS by > 10%.
    # The baseline is taken a quarter into the main phase, before its upstream kill, flood,
    # status abuse and pipelining and 3/4 of its reloads: the datapath's thread pool settles
    # only under the main phase's steady traffic (seen: 7-8 threads at the end of the warm-up,
    # 10-11 ten seconds later, about 0.7 MB of stack and arena each, +2-4 MB that then stays
    # flat; sessions alone do not grow it), and a leak per datagram, reload, session or status
    # connection still shows as growth after it.
    log("warm-up 30 s: 5 reloads, upstream kill/restart, status abuse, so the baseline has seen each once")
    warm = {"n": 0, "killed": False, "restarted": False, "abused": False, "pipelined": False, "flooded": False}
    warm_results = {"pipeline": [], "flood": [], "churn": []}
    churn_stop = threading.Event()
    threading.Thread(target=session_churn, args=(ports["fwd"], churn_stop, warm_results["churn"], 1000), daemon=True).start()

    def warm_tick(t):
        if warm["n"] < 5 and t >= 2 + warm["n"] * 2:
            warm["n"] += 1
            d.write(config(upstream.port, 1000 + warm["n"]))
            os.kill(d.proc.pid, signal.SIGHUP)
        if not warm["killed"] and t >= 8:
            warm["killed"] = True
            upstream.kill()
        if not warm["restarted"] and t >= 13:
            warm["restarted"] = True
            upstream.start()
        if not warm["abused"] and t >= 16:
            warm["abused"] = True
            threading.Thread(target=abuse_status, args=(status_port,), daemon=True).start()
        if not warm["pipelined"] and t >= 22:
            warm["pipelined"] = True
            threading.Thread(target=pipeline_status, args=(status_port, warm_results["pipeline"]), daemon=True).start()
        if not warm["flooded"] and t >= 19:
            warm["flooded"] = True
            threading.Thread(target=rotating_flood, args=(ports["limited"], warm_results["flood"]), daemon=True).start()

    send_for(30, warm_tick)
    churn_stop.set()
    time.sleep(0.5)
    log(f"RSS after warm-up: {d.rss_kib()} KiB, {d.threads()} threads")

    events = {"reloads": 0, "killed": False, "restarted": False, "abused": False, "pipelined": False, "flooded": False}
    results = {"pipeline": [], "flood": [], "churn": []}
    churn_stop = threading.Event()
    churn = threading.Thread(target=session_churn, args=(ports["fwd"], churn_stop, results["churn"]), daemon=True)
    churn.start()
    reload_every = (args.seconds - 10) / max(RELOADS, 1)
    last_line = [len(d.lines)]

    rss_marks = {"next": 10.0, "base": None}

    def tick(t):
        if rss_marks["base"] is None and t >= args.seconds * 0.25:
            rss_marks["base"] = d.rss_kib()
            log(f"t={t:.0f}s baseline RSS {rss_marks['base']} KiB, {d.threads()} threads")
        if t >= rss_marks["next"]:
            rss_marks["next"] += 10.0
            log(f"t={t:.0f}s RSS {d.rss_kib()} KiB, {d.threads()} threads, reloads {events['reloads']}")
        if events["reloads"] < RELOADS and t >= 2 + events["reloads"] * reload_every:
            events["reloads"] += 1
            d.write(config(upstream.port, events["reloads"]))
            os.kill(d.proc.pid, signal.SIGHUP)
        if os.environ.get("SOAK_NO_KILL"):
            events["killed"] = events["restarted"] = True
        if not events["killed"] and t >= args.seconds * 0.3:
            events["killed"] = True
            upstream.kill()
            log("upstream killed")
        if not events["restarted"] and t >= args.seconds * 0.45:
            events["restarted"] = True
            upstream.start()
            log("upstream restarted on the same port")
        if not events["abused"] and t >= args.seconds * 0.6:
            events["abused"] = True
            threading.Thread(target=abuse_status, args=(status_port,), daemon=True).start()
        if not events["pipelined"] and t >= args.seconds * 0.7:
            events["pipelined"] = True
            threading.Thread(target=pipeline_status, args=(status_port, results["pipeline"]), daemon=True).start()
        if not events["flooded"] and t >= args.seconds * 0.5:
            events["flooded"] = True
            threading.Thread(target=rotating_flood, args=(ports["limited"], results["flood"]), daemon=True).start()
        if t >= args.seconds * 0.8:
            fwd_window["on"] = True

    log(f"main phase {args.seconds:.0f} s: {RATE}/s from {CLIENTS} ports, {RELOADS} reloads, upstream kill/restart, status abuse")
    send_for(args.seconds, tick)
    churn_stop.set()
    churn.join()
    # Wait for outstanding echo replies (or until nothing has arrived for 2 s).
    idle_since, last = time.time(), None
    while time.time() - idle_since < 2:
        with lock:
            n = len(outstanding)
        if n != last:
            last, idle_since = n, time.time()
        time.sleep(0.05)

    failures = []
    i, line = d.wait_for(r"reloaded .*generation=%d( |$)" % (RELOADS + 6), 0, timeout=10)
    log(f"{RELOADS} reloads applied after 5 in warm-up (generation {RELOADS + 6})")
    if d.proc.poll() is not None:
        failures.append("daemon died")
    final_rss = d.rss_kib()
    base_rss = rss_marks["base"] or final_rss
    log(f"RSS at the end: {final_rss} KiB ({final_rss / base_rss:.3f} x the baseline)")
    if final_rss > base_rss * 1.10:
        failures.append(f"RSS grew from {base_rss} to {final_rss} KiB (> 10%)")
    if status_port:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/healthz", timeout=5) as r:
                if r.status != 200:
                    failures.append(f"/healthz answered {r.status}")
        except Exception as e:
            failures.append(f"/healthz failed: {e}")
    else:
        failures.append("no status endpoint address in the log")

    with lock:
        lost_echo = sum(1 for p in outstanding if p.startswith(b"e"))
        snapshot = dict(sent=dict(sent), got=dict(got), window=dict(fwd_window))
    log(f"echo: sent {snapshot['sent']['echo']}, answered {snapshot['got']['echo']}, lost {lost_echo}")
    log(f"forward: sent {snapshot['sent']['fwd']}, answered {snapshot['got']['fwd']} "
        f"(last 20%: {snapshot['window']['got']}/{snapshot['window']['sent']})")
    if lost_echo:
        failures.append(f"the unchanged echo listener lost {lost_echo} datagrams")
    for phase, r in (("warm-up", warm_results), ("main", results)):
        if len(r["pipeline"]) != 1 or not r["pipeline"][0][1]:
            failures.append(f"{phase}: the status endpoint was not healthy while pipelining clients held it ({r['pipeline']})")
        if len(r["flood"]) != 1:
            failures.append(f"{phase}: the rotating-source flood did not finish")
        elif r["flood"][0][0] > r["flood"][0][1]:
            failures.append(f"{phase}: rotating sources got {r['flood'][0][0]} answers, more than the {r['flood'][0][1]} the rate limit allows")
        if len(r["churn"]) != 1 or r["churn"][0][0] == 0:
            failures.append(f"{phase}: the session-churn client did not run ({r['churn']})")
        else:
            log(f"{phase}: session churn: {r['churn'][0][0]} sessions opened, {r['churn'][0][1]} answered")
    if status_port:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status", timeout=5) as r:
                evictions = re.search(r'"name":\s*"limited".*?"rate_limit_evictions":\s*(\d+)', r.read().decode(), re.S)
            if not evictions or int(evictions.group(1)) == 0:
                failures.append("rate_limit_evictions of the rate-limited echo listener not shown or 0 in /status")
            else:
                log(f"limited: rate_limit_evictions {evictions.group(1)}")
        except Exception as e:
            failures.append(f"/status failed: {e}")
    w = snapshot["window"]
    if w["sent"] == 0 or w["got"] < 0.99 * w["sent"]:
        failures.append(f"forwarding did not recover after the upstream came back ({w['got']}/{w['sent']})")

    # SIGTERM while traffic still flows.
    stop_tx = threading.Event()

    def trickle():
        k = 0
        while not stop_tx.is_set():
            try:
                socks[k % CLIENTS].sendto(b"late", target[k % CLIENTS])
            except OSError:
                pass
            k += 1
            time.sleep(0.0005)

    stop_rx.set()
    rx.join()
    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    time.sleep(0.2)
    d.proc.send_signal(signal.SIGTERM)
    try:
        rc = d.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        rc = None
    stop_tx.set()
    if rc != 0:
        failures.append(f"SIGTERM during traffic: exit status {rc}")
    time.sleep(0.2)
    totals = {field(l, "listener.name"): l for l in d.lines if " totals " in l and " upstream totals " not in l}
    upstream_totals = [l for l in d.lines if " upstream totals " in l]
    for name in ("echo", "limited", "fwd"):
        line = totals.get(name)
        if not line:
            failures.append(f"no totals for {name}")
            continue
        received = int(field(line, "received"))
        drops = {k[5:]: int(v) for k, v in re.findall(r"(drop\.\S+?)=(\d+)", line)}
        if name != "fwd":
            out, dropped = int(field(line, "sent")), sum(drops.values())
            log(f"{name}: received {received} = sent {out} + dropped {dropped}")
            if received != out + dropped:
                failures.append(f"{name}: counters do not balance: received {received} != {out} + {dropped}")
            continue
        # Relay, towards the upstream: every datagram is sent, dropped on the upstream, or
        # dropped before an upstream was chosen.
        ups = [l for l in upstream_totals if field(l, "listener.name") == name]
        up_sent = sum(int(field(l, "sent_packets")) for l in ups)
        up_drops = sum(int(field(l, "send_drops")) for l in ups)
        before = sum(drops.get(k, 0) for k in ("source_port", "loop", "denied", "rate_limited", "rate_limited_total", "too_large", "no_session"))
        log(f"{name} -> upstream: received {received} = sent {up_sent} + upstream drops {up_drops} + dropped before {before}")
        if received != up_sent + up_drops + before:
            failures.append(f"{name}: client->upstream counters do not balance")
        # Back to the clients: every reply is sent, dropped on the way, or ignored on purpose.
        up_received = sum(int(field(l, "received_packets")) for l in ups)
        back = int(field(line, "sent"))
        back_drops = sum(drops.get(k, 0) for k in ("send_buffer_full", "send_error", "refused"))
        ignored = int(field(line, "replies_ignored") or 0)
        log(f"upstream -> {name}: replies {up_received} = sent {back} + dropped {back_drops} + ignored {ignored}")
        if up_received != back + back_drops + ignored:
            failures.append(f"{name}: upstream->client counters do not balance")

    if failures:
        for f in failures:
            log("FAIL: " + f)
        print("\n".join(d.lines[-40:]))
        sys.exit(1)
    log("PASS")


def abuse_status(port):
    """Malformed requests: garbage, a 20 KiB header, partial heads held open, many connections."""
    if not port:
        return
    conns = []
    for k in range(100):
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            continue
        kind = k % 4
        try:
            if kind == 0:
                c.sendall(os.urandom(512))
            elif kind == 1:
                c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20480 + b"\r\n\r\n")
            elif kind == 2:
                c.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")  # never finished
            else:
                c.sendall(b"DELETE /status HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            pass
        conns.append(c)
    log(f"status endpoint: {len(conns)} malformed or slow connections")
    time.sleep(3)
    for c in conns:
        c.close()


if __name__ == "__main__":
    main()
