#!/usr/bin/env python3
"""udprelayd benchmark driver (run through `make bench`).

Starts, side by side on loopback, udprelayd, the C reference (Benchmarks/refserver.c), nginx's
stream proxy and socat; drives each with the closed-loop load client (Benchmarks/loadgen.c) for
echo and forward, 64- and 1400-byte payloads, W=1 (latency) and W=64 (throughput); repeats every
case BENCH_REPS times, interleaving servers so all see the same machine; reports medians and every
figure as a ratio to the C reference measured in the same invocation. Then measures heap
allocations per datagram (LD_PRELOAD mallocount.so), start-up time to first echo and RSS with
many live sessions. Prints a table and writes BENCHMARKS.md.

Environment:
  BENCH_SECONDS   seconds per measurement (default 1.5)
  BENCH_REPS      repetitions per case, at least 3 for the published table (default 3)
  BENCH_ONLY      comma-separated filter on case ids, e.g. "echo" or "echo/64/1" (default: all)
  BENCH_SERVERS   comma-separated subset of udprelayd,udprelayd-nogso,cref,nginx,socat (default:
                  all; udprelayd-nogso is udprelayd with `udp_gso = no`)
  BENCH_SESSIONS  live sessions for the RSS measurement (default 100000)
  BENCH_LISTENER_KEYS  extra keys for udprelayd's listeners, ';'-separated (e.g. "busy_poll = 0")
  BENCH_RT        1 (default when root): run servers and client at SCHED_FIFO priority 10
  BENCH_OUT       where to write the report (default BENCHMARKS.md; "-" for none;
                  a filtered run writes nothing unless BENCH_OUT is set)
  UDPRELAYD       the binary (default .build/release/udprelayd)
  BENCH_BIN       directory with loadgen, openloop, refserver, mallocount.so (default .build/bench)
  BENCH_OPEN_SECONDS  seconds per open-loop measurement (default 5)
  BENCH_OPEN      0 to skip the open-loop section (default 1; "open" in BENCH_ONLY runs only it)
  BENCH_SESSIONS_READ  live sessions for the /sessions read-cost measurement (default 1000; part of "extras")
  BENCH_SESSIONS_READ_RATE  datagrams/s offered during it (default 10000)
"""
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BENCH_BIN", os.path.join(ROOT, ".build/bench"))
UDPRELAYD = os.environ.get("UDPRELAYD", os.path.join(ROOT, ".build/release/udprelayd"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "1.5"))
REPS = int(os.environ.get("BENCH_REPS", "3"))
ONLY = [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s]
ALL_SERVERS = ["udprelayd", "udprelayd-nogso", "cref", "nginx", "socat"]
SERVERS = [s for s in os.environ.get("BENCH_SERVERS", ",".join(ALL_SERVERS)).split(",") if s]
SESSIONS = int(os.environ.get("BENCH_SESSIONS", "100000"))
CLK = os.sysconf("SC_CLK_TCK")
LOADGEN = os.path.join(BIN, "loadgen")
OPENLOOP = os.path.join(BIN, "openloop")
OPEN_SECONDS = float(os.environ.get("BENCH_OPEN_SECONDS", "5"))
SESSIONS_READ = int(os.environ.get("BENCH_SESSIONS_READ", "1000"))
SESSIONS_READ_RATE = int(os.environ.get("BENCH_SESSIONS_READ_RATE", "10000"))
# Offered rates of the open-loop section (datagrams per second), per mode.
OPEN_RATES = {"echo": (1000, 10000, 50000), "forward": (1000, 10000, 25000)}
OPEN_SERVERS = ("udprelayd", "cref", "nginx")
REFSERVER = os.path.join(BIN, "refserver")
MALLOCOUNT = os.path.join(BIN, "mallocount.so")

NCPU = len(os.sched_getaffinity(0))
SERVER_CPU, CLIENT_CPU = ("1", "0") if NCPU >= 2 else (None, None)
# Real-time priority (SCHED_FIFO 10) for the servers and the load client keeps builds and other
# work on a shared machine from preempting them mid-measurement; the kernel's RT throttling
# (95% of each second by default) still leaves the rest of the machine some time.
RT = os.environ.get("BENCH_RT", "1" if os.geteuid() == 0 else "0") == "1"

# mallocount.so reports on this signal (udprelayd uses SIGUSR1 and SIGUSR2 for drain).
MALLOCOUNT_SIGNAL = signal.SIGRTMIN + 7


def pinned(cpu, argv):
    prefix = ["chrt", "-f", "10"] if RT else []
    return prefix + (["taskset", "-c", cpu] if cpu is not None else []) + argv


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def wait_echo(port, timeout=10.0, interval=0.001):
    """Sends a probe every `interval` until it comes back; returns seconds waited or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(interval)
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < timeout:
            try:
                s.sendto(b"probe", ("127.0.0.1", port))
                while True:
                    data = s.recv(64)
                    if data == b"probe":
                        return time.perf_counter() - start
            except (socket.timeout, ConnectionRefusedError):
                continue
    finally:
        s.close()
    return None


def process_tree(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return pids


def cpu_seconds(pid):
    """utime+stime of a process and its descendants (all threads), in seconds."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / CLK


def thread_runtimes(pid):
    """Nanoseconds on CPU of every live thread of a process and its descendants, by thread id
    (/proc/TID/schedstat: the scheduler's own account, not clock ticks)."""
    out = {}
    for p in process_tree(pid):
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/schedstat") as f:
                    out[int(task)] = int(f.read().split()[0])
        except OSError:
            pass
    return out


class CPUWindow:
    """CPU seconds a server spends over a window. utime+stime come in clock ticks (10 ms): at
    1,000 datagrams/s a 5 s window is a few dozen ticks, so each window carries several percent
    of rounding. The scheduler's per-thread nanoseconds have none; they are used unless a thread
    ended inside the window (its time would be missing), and then the ticks are."""

    def __init__(self, pid):
        self.pid, self.ticks, self.threads = pid, cpu_seconds(pid), thread_runtimes(pid)

    def seconds(self):
        ticks = cpu_seconds(self.pid) - self.ticks
        now = thread_runtimes(self.pid)
        if not self.threads or any(t not in now for t in self.threads):
            return ticks
        return sum(ns - self.threads.get(t, 0) for t, ns in now.items()) / 1e9


def context_switches(pid):
    """Voluntary + involuntary context switches of a process and its descendants (all threads)."""
    total = 0
    for p in process_tree(pid):
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            total += int(line.split()[1])
        except OSError:
            pass
    return total


def rss_kib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Server:
    """One server process group we started; stopped by its PID (and group) only."""

    def __init__(self, name, argv, port, tmp, env=None, cpu=SERVER_CPU):
        self.name, self.port = name, port
        self.err = open(os.path.join(tmp, f"{name}-{port}.log"), "w")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(pinned(cpu, argv), stdout=subprocess.DEVNULL, stderr=self.err,
                                     start_new_session=True, env=env)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.err.close()


def udprelayd_config(tmp, name, body):
    path = os.path.join(tmp, f"{name}.ini")
    extra = os.environ.get("BENCH_LISTENER_KEYS", "").replace(";", "\n")
    with open(path, "w") as f:
        f.write("[daemon]\nlog_level = warning\n\n[status]\nlisten = off\n\n" + body + (extra + "\n" if extra else ""))
    return path


def relay_supported(tmp):
    path = udprelayd_config(tmp, "probe-forward",
                            "[listener f]\nlisten = 127.0.0.1:9\nmode = forward\nupstream = 127.0.0.1:7\n")
    r = subprocess.run([UDPRELAYD, "--check-config", "--config", path], capture_output=True, text=True)
    return r.returncode == 0


def loadgen(port, window, payload, seconds=SECONDS, extra=()):
    sockets = 1 if window == 1 else 4
    argv = pinned(CLIENT_CPU, [LOADGEN, "-t", f"127.0.0.1:{port}", "-w", str(window), "-s", str(sockets),
                               "-p", str(payload), "-d", str(seconds), "-u", "0.2", *extra])
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if r.returncode == 2 or not r.stdout.strip():
        raise RuntimeError(f"loadgen failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def start_servers(tmp, relay):
    servers = {}
    upstream_port = free_port()
    servers["upstream"] = Server("upstream", [REFSERVER, "echo", f"127.0.0.1:{upstream_port}"], upstream_port, tmp)
    up = f"127.0.0.1:{upstream_port}"

    def add(key, name, argv_for_port, env=None):
        port = free_port()
        servers[key] = Server(name, argv_for_port(port), port, tmp, env=env)

    if "cref" in SERVERS:
        add(("echo", "cref"), "cref-echo", lambda p: [REFSERVER, "echo", f"127.0.0.1:{p}"])
        add(("forward", "cref"), "cref-forward", lambda p: [REFSERVER, "forward", f"127.0.0.1:{p}", up])
    if "udprelayd" in SERVERS:
        add(("echo", "udprelayd"), "udprelayd-echo", lambda p: [
            UDPRELAYD, "--config", udprelayd_config(tmp, f"echo-{p}", f"[listener echo]\nlisten = 127.0.0.1:{p}\nmode = echo\n")])
        if relay:
            add(("forward", "udprelayd"), "udprelayd-forward", lambda p: [
                UDPRELAYD, "--config", udprelayd_config(tmp, f"forward-{p}", f"[listener fwd]\nlisten = 127.0.0.1:{p}\nmode = forward\nupstream = {up}\n")])
    if "udprelayd-nogso" in SERVERS:
        # The same daemon without UDP GSO: what segmentation adds, measured in the same run.
        add(("echo", "udprelayd-nogso"), "udprelayd-nogso-echo", lambda p: [
            UDPRELAYD, "--config", udprelayd_config(tmp, f"echo-nogso-{p}", f"[listener echo]\nlisten = 127.0.0.1:{p}\nmode = echo\nudp_gso = no\n")])
        if relay:
            add(("forward", "udprelayd-nogso"), "udprelayd-nogso-forward", lambda p: [
                UDPRELAYD, "--config", udprelayd_config(tmp, f"forward-nogso-{p}", f"[listener fwd]\nlisten = 127.0.0.1:{p}\nmode = forward\nudp_gso = no\nupstream = {up}\n")])
    if "nginx" in SERVERS:
        def nginx_argv(p):
            conf = os.path.join(tmp, f"nginx-{p}.conf")
            with open(conf, "w") as f:
                f.write(f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
pid {tmp}/nginx-{p}.pid;
error_log {tmp}/nginx-{p}-error.log warn;
events {{ worker_connections 4096; }}
stream {{
    server {{
        listen 127.0.0.1:{p} udp;
        proxy_pass {up};
        proxy_timeout 60s;
    }}
}}
""")
            return ["nginx", "-e", f"{tmp}/nginx-{p}-error.log", "-p", tmp, "-c", conf]
        add(("forward", "nginx"), "nginx", nginx_argv)
    if "socat" in SERVERS:
        add(("forward", "socat"), "socat", lambda p: [
            "socat", "-T", "60", f"UDP4-LISTEN:{p},bind=127.0.0.1,reuseaddr,fork", f"UDP4:{up}"])
    for key, s in servers.items():
        waited = wait_echo(s.port)
        if waited is None:
            # Stop what did start: a failed run must not leave servers behind.
            for other in servers.values():
                other.stop()
            raise RuntimeError(f"{s.name} did not answer on port {s.port}; see {s.err.name}")
    return servers


def median(values):
    return statistics.median(values) if values else 0.0


def fmt_ratio(x):
    return f"{x:.2f}x" if x else "-"


def run_matrix(servers, relay):
    cases = []
    for mode in ("echo", "forward"):
        for payload in (64, 1400):
            for window in (1, 64):
                cid = f"{mode}/{payload}/{window}"
                if ONLY and not any(cid.startswith(o) for o in ONLY):
                    continue
                cases.append((mode, payload, window))
    order = ALL_SERVERS
    results = {}
    for rep in range(REPS):
        for mode, payload, window in cases:
            for name in order:
                s = servers.get((mode, name))
                if s is None:
                    continue
                before = cpu_seconds(s.pid)
                r = loadgen(s.port, window, payload)
                r["cpu"] = cpu_seconds(s.pid) - before
                results.setdefault((mode, payload, window, name), []).append(r)
                log(f"rep {rep + 1}/{REPS} {mode:7} {payload:4}B W={window:<2} {name:9} "
                    f"{r['rate']:>9.0f}/s p50 {r['p50_us']:7.1f} p99 {r['p99_us']:8.1f} "
                    f"lost {r['lost']} corrupt {r['corrupt']}")
    rows = []
    for mode, payload, window in cases:
        ref = results.get((mode, payload, window, "cref"))
        ref_rate = median([r["rate"] for r in ref]) if ref else 0
        ref_p99 = median([r["p99_us"] for r in ref]) if ref else 0
        for name in order:
            rs = results.get((mode, payload, window, name))
            row = {"mode": mode, "payload": payload, "window": window, "server": name}
            if rs is None:
                if name == "udprelayd" and mode == "forward" and not relay and "udprelayd" in SERVERS:
                    row["na"] = "n/a (relay not landed)"
                    rows.append(row)
                continue
            rate = median([r["rate"] for r in rs])
            replies = sum(r["replies"] for r in rs)
            row.update({
                "rate": rate, "p50": median([r["p50_us"] for r in rs]), "p99": median([r["p99_us"] for r in rs]),
                "p999": median([r["p999_us"] for r in rs]),
                "lost": sum(r["lost"] for r in rs), "corrupt": sum(r["corrupt"] for r in rs) + sum(r["late"] for r in rs),
                "cpu_per_m": sum(r["cpu"] for r in rs) / replies * 1e6 if replies else 0,
                "rate_ratio": rate / ref_rate if ref_rate else 0,
                "rates": [r["rate"] for r in rs],
            })
            row["p99_ratio"] = row["p99"] / ref_p99 if ref_p99 else 0
            rows.append(row)
    return rows


def run_openloop(servers):
    """CPU per datagram at fixed offered rates (open loop): what a relay costs at everyday load."""
    results = {}
    for rep in range(REPS):
        for mode, rates in OPEN_RATES.items():
            for rate in rates:
                for name in OPEN_SERVERS:
                    s = servers.get((mode, name))
                    if s is None:
                        continue
                    cpu0, cs0 = CPUWindow(s.pid), context_switches(s.pid)
                    argv = pinned(CLIENT_CPU, [OPENLOOP, "-t", f"127.0.0.1:{s.port}", "-r", str(rate),
                                               "-d", str(OPEN_SECONDS), "-s", "8", "-p", "64"])
                    t0 = time.perf_counter()
                    r = subprocess.run(argv, capture_output=True, text=True, timeout=OPEN_SECONDS + 30)
                    wall = time.perf_counter() - t0
                    if r.returncode == 2 or not r.stdout.strip():
                        raise RuntimeError(f"openloop failed: {r.stderr.strip()}")
                    o = json.loads(r.stdout)
                    o["cpu"], o["cs"], o["wall"] = cpu0.seconds(), context_switches(s.pid) - cs0, wall
                    results.setdefault((mode, rate, name), []).append(o)
                    log(f"rep {rep + 1}/{REPS} open {mode:7} {rate:>6}/s {name:9} CPU {o['cpu'] / wall * 100:5.1f}% "
                        f"{o['cpu'] / max(o['sent'], 1) * 1e6:6.2f} µs/datagram, {o['cs'] / wall:8.0f} cs/s, "
                        f"lost {o['lost']} corrupt {o['corrupt'] + o['duplicate']}")
    syscalls = count_syscalls(servers)
    rows = []
    for mode, rates in OPEN_RATES.items():
        for rate in rates:
            ref = results.get((mode, rate, "cref"))
            ref_us = median([o["cpu"] / o["sent"] * 1e6 for o in ref]) if ref else 0
            for name in OPEN_SERVERS:
                os_ = results.get((mode, rate, name))
                if not os_:
                    continue
                us = median([o["cpu"] / o["sent"] * 1e6 for o in os_])
                rows.append({"mode": mode, "rate": rate, "server": name,
                             "cpu_pct": median([o["cpu"] / o["wall"] * 100 for o in os_]),
                             "us": us, "ratio": us / ref_us if ref_us else 0,
                             "cs": median([o["cs"] / o["sent"] for o in os_]),
                             "p50": median([o["p50_us"] for o in os_]), "p99": median([o["p99_us"] for o in os_]),
                             "lost": sum(o["lost"] for o in os_),
                             "corrupt": sum(o["corrupt"] + o["duplicate"] for o in os_),
                             "syscalls": syscalls.get((mode, rate, name))})
    return rows


def count_syscalls(servers):
    """System calls per datagram offered, per server and rate: a figure the machine's load
    does not move (unlike CPU time), counted with `perf stat -e raw_syscalls:sys_enter` over
    every thread of the server's processes in one extra open-loop run of OPEN_SECONDS. Empty
    when perf cannot count (not installed, or no permission)."""
    probe = subprocess.run(["perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "true"], capture_output=True, text=True) \
        if shutil.which("perf") else None
    if probe is None or probe.returncode != 0:
        log("perf cannot count system calls here: the open-loop table has no system-call column")
        return {}
    out = {}
    for mode, rates in OPEN_RATES.items():
        for rate in rates:
            for name in OPEN_SERVERS:
                s = servers.get((mode, name))
                if s is None:
                    continue
                pids = ",".join(str(p) for p in process_tree(s.pid))
                perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p", pids],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                time.sleep(0.2)  # perf attaches
                argv = pinned(CLIENT_CPU, [OPENLOOP, "-t", f"127.0.0.1:{s.port}", "-r", str(rate),
                                           "-d", str(OPEN_SECONDS), "-s", "8", "-p", "64"])
                r = subprocess.run(argv, capture_output=True, text=True, timeout=OPEN_SECONDS + 30)
                perf.send_signal(signal.SIGINT)
                _, err = perf.communicate(timeout=10)
                counts = [l.split(",")[0] for l in err.splitlines() if "raw_syscalls:sys_enter" in l]
                if r.returncode == 2 or not r.stdout.strip() or not counts or not counts[0].isdigit():
                    continue
                sent = json.loads(r.stdout)["sent"]
                # perf ran 0.2 s before the client and stops after it: an idle server makes
                # about no calls then (BENCHMARKS.md, idle wakeups), so the count is the run's.
                out[(mode, rate, name)] = int(counts[0]) / max(sent, 1)
                log(f"system calls {mode:7} {rate:>6}/s {name:9} {out[(mode, rate, name)]:.2f} per datagram")
    return out


def open_table(rows):
    lines = ["| mode | offered/s | server | CPU % | CPU µs per datagram | vs C ref | context switches per datagram "
             "| system calls per datagram | p50 µs | p99 µs | lost / corrupt |", "|" + "---|" * 11]
    for r in rows:
        sc = f"{r['syscalls']:.2f}" if r.get("syscalls") is not None else "n/a"
        lines.append(f"| {r['mode']} | {r['rate']:,} | {r['server']} | {r['cpu_pct']:.1f} | {r['us']:.2f} "
                     f"| {fmt_ratio(r['ratio'])} | {r['cs']:.2f} | {sc} | {r['p50']:.0f} | {r['p99']:.0f} "
                     f"| {r['lost']} / {r['corrupt']} |")
    return "\n".join(lines)


def table(rows):
    head = ("| mode | payload | W | server | replies/s | vs C ref | p50 µs | p99 µs | p99.9 µs | p99 vs C ref "
            "| CPU s per 1M replies | lost / corrupt |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        if "na" in r:
            lines.append(f"| {r['mode']} | {r['payload']} | {r['window']} | {r['server']} | {r['na']} "
                         "| | | | | | | |")
            continue
        lines.append(f"| {r['mode']} | {r['payload']} | {r['window']} | {r['server']} | {r['rate']:,.0f} "
                     f"| {fmt_ratio(r['rate_ratio'])} | {r['p50']:.1f} | {r['p99']:.1f} | {r['p999']:.1f} "
                     f"| {fmt_ratio(r['p99_ratio'])} | {r['cpu_per_m']:.2f} | {r['lost']} / {r['corrupt']} |")
    return "\n".join(lines)


def wait_file_lines(path, n, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(path) as f:
                lines = [l for l in f.read().splitlines() if l.startswith("mallocount")]
            if len(lines) >= n:
                return lines
        except OSError:
            if n == 0:
                return []
        time.sleep(0.01)
    raise RuntimeError(f"mallocount did not report to {path}")


def parse_counts(line):
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}


def measure_allocations(tmp, mode, relay_port=None):
    """Allocations per datagram in a steady-state window: snapshot, N replies, snapshot."""
    out = os.path.join(tmp, f"mallocount-{mode}.txt")
    port = free_port()
    body = f"[listener a]\nlisten = 127.0.0.1:{port}\nmode = {mode}\n"
    if mode == "forward":
        body += f"upstream = 127.0.0.1:{relay_port}\n"
    env = dict(os.environ, LD_PRELOAD=MALLOCOUNT, MALLOCOUNT_OUT=out)
    s = Server(f"udprelayd-malloc-{mode}", [UDPRELAYD, "--config", udprelayd_config(tmp, f"malloc-{mode}", body)],
               port, tmp, env=env)
    try:
        if wait_echo(port) is None:
            raise RuntimeError(f"udprelayd under mallocount did not answer; see {s.err.name}")
        figures = {}
        for window, count in ((64, 200000), (1, 20000)):
            loadgen(port, window, 64, seconds=0.5)  # warm up: sessions, caches, lazy start-up work
            lines_before = len(wait_file_lines(out, 0))
            os.kill(s.pid, MALLOCOUNT_SIGNAL)
            a = parse_counts(wait_file_lines(out, lines_before + 1)[-1])
            r = loadgen(port, window, 64, seconds=30, extra=("-n", str(count)))
            os.kill(s.pid, MALLOCOUNT_SIGNAL)
            b = parse_counts(wait_file_lines(out, lines_before + 2)[-1])
            allocs = b["allocs"] - a["allocs"]
            figures[window] = {"allocs": allocs, "replies": r["replies"], "per_datagram": allocs / r["replies"]}
        return figures
    finally:
        s.stop()


def measure_startup(tmp, runs=5):
    """Seconds from exec to the first echo reply (median of `runs`), udprelayd and C reference."""
    out = {}
    for name in ("udprelayd", "cref"):
        times = []
        for _ in range(runs):
            port = free_port()
            if name == "udprelayd":
                argv = [UDPRELAYD, "--config", udprelayd_config(tmp, f"start-{port}", f"[listener s]\nlisten = 127.0.0.1:{port}\n")]
            else:
                argv = [REFSERVER, "echo", f"127.0.0.1:{port}"]
            s = Server(f"startup-{name}", argv, port, tmp)
            try:
                t = wait_echo(port)
                if t is None:
                    raise RuntimeError(f"{name} did not start; see {s.err.name}")
                times.append(time.perf_counter() - s.started)
            finally:
                s.stop()
        out[name] = median(times)
    return out


def measure_sessions(tmp, servers):
    """RSS of each forwarder after `SESSIONS` client addresses each sent one datagram."""
    out = {}
    for name in ("udprelayd", "cref"):
        s = servers.get(("forward", name))
        if s is None:
            continue
        # A fresh process so the figure is not inflated by the matrix runs.
        port = free_port()
        up = servers["upstream"].port
        if name == "udprelayd":
            argv = [UDPRELAYD, "--config", udprelayd_config(tmp, f"sessions-{port}", f"[listener s]\nlisten = 127.0.0.1:{port}\nmode = forward\nupstream = 127.0.0.1:{up}\nmax_sessions = {SESSIONS}\n")]
        else:
            argv = [REFSERVER, "forward", f"127.0.0.1:{port}", f"127.0.0.1:{up}"]
        srv = Server(f"sessions-{name}", argv, port, tmp)
        try:
            if wait_echo(port) is None:
                raise RuntimeError(f"{name} did not start; see {srv.err.name}")
            base = rss_kib(srv.pid)
            r = loadgen(port, 64, 64, seconds=15, extra=("-n", str(SESSIONS), "-a", str(SESSIONS), "-s", "1", "-T", "300"))
            out[name] = {"base_kib": base, "rss_kib": rss_kib(srv.pid), "hwm_kib": rss_kib(srv.pid, "VmHWM"),
                         "replies": r["replies"], "lost": r["lost"], "nofile": max_open_files(srv.pid)}
        finally:
            srv.stop()
    return out


def free_tcp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(port, path, timeout=5.0):
    """One GET over a new connection; (status, body bytes)."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def measure_sessions_read(tmp):
    """What reading /sessions costs the datapath: a forwarder holding SESSIONS_READ live sessions
    carries open-loop traffic at a fixed rate with and without a client reading
    /sessions?limit=1000 back to back; reps interleave the two."""
    up = free_port()
    upstream = Server("sessions-read-upstream", [REFSERVER, "echo", f"127.0.0.1:{up}"], up, tmp)
    port, status = free_port(), free_tcp_port()
    path = os.path.join(tmp, "sessions-read.ini")
    with open(path, "w") as f:
        f.write(f"[daemon]\nlog_level = warning\n\n[status]\nlisten = 127.0.0.1:{status}\n\n"
                f"[listener s]\nlisten = 127.0.0.1:{port}\nmode = forward\nupstream = 127.0.0.1:{up}\n"
                f"session_timeout = 600s\nmax_sessions = {SESSIONS_READ * 2}\n")
    srv = Server("sessions-read", [UDPRELAYD, "--config", path], port, tmp)
    try:
        if wait_echo(up) is None or wait_echo(port) is None:
            raise RuntimeError(f"sessions-read servers did not start; see {srv.err.name}")
        # The live sessions: that many loopback source addresses, one datagram each.
        loadgen(port, 64, 64, seconds=15, extra=("-n", str(SESSIONS_READ), "-a", str(SESSIONS_READ), "-s", "1", "-T", "300"))
        code, body = http_get(status, "/sessions?limit=1000")
        if code != 200:
            raise RuntimeError(f"/sessions answered {code}")
        listed = len(json.loads(body)["sessions"])
        # Seconds between the starts of two reads: none, one a second (an operator's watch or a
        # scraper), back to back (the worst a local client can do).
        kinds = {"idle": None, "every_second": 1.0, "back_to_back": 0.0}
        runs = {kind: [] for kind in kinds}
        for rep in range(REPS):
            for kind, every in kinds.items():
                stop, reads = threading.Event(), []

                def reader(every=every, stop=stop, reads=reads):
                    while not stop.is_set():
                        t0 = time.perf_counter()
                        c, b = http_get(status, "/sessions?limit=1000")
                        reads.append((c, time.perf_counter() - t0, len(b)))
                        stop.wait(max(0.0, every - (time.perf_counter() - t0)))

                t = threading.Thread(target=reader) if every is not None else None
                cpu0 = cpu_seconds(srv.pid)
                if t:
                    t.start()
                argv = pinned(CLIENT_CPU, [OPENLOOP, "-t", f"127.0.0.1:{port}", "-r", str(SESSIONS_READ_RATE),
                                           "-d", str(OPEN_SECONDS), "-s", "8", "-p", "64"])
                t0 = time.perf_counter()
                r = subprocess.run(argv, capture_output=True, text=True, timeout=OPEN_SECONDS + 30)
                wall = time.perf_counter() - t0
                stop.set()
                if t:
                    t.join()
                if r.returncode == 2 or not r.stdout.strip():
                    raise RuntimeError(f"openloop failed: {r.stderr.strip()}")
                o = json.loads(r.stdout)
                o["cpu"], o["wall"], o["reads"] = cpu_seconds(srv.pid) - cpu0, wall, reads
                runs[kind].append(o)
                ok = sum(1 for c, _, _ in reads if c == 200)
                log(f"rep {rep + 1}/{REPS} sessions-read {kind:12} CPU {o['cpu'] / wall * 100:5.1f}% p99 {o['p99_us']:.0f} µs "
                    f"lost {o['lost']} reads {ok}/{len(reads)}")
        out = {"sessions": listed, "rate": SESSIONS_READ_RATE}
        for kind, os_ in runs.items():
            out[kind] = {"cpu_pct": median([o["cpu"] / o["wall"] * 100 for o in os_]),
                         "p50": median([o["p50_us"] for o in os_]), "p99": median([o["p99_us"] for o in os_]),
                         "lost": sum(o["lost"] for o in os_), "corrupt": sum(o["corrupt"] + o["duplicate"] for o in os_)}
            reads = [x for o in os_ for x in o["reads"]]
            good = [x for x in reads if x[0] == 200]
            out[kind].update({"reads": len(good), "failed_reads": len(reads) - len(good),
                              "reads_per_s": len(good) / sum(o["wall"] for o in os_)})
        good = [x for o in runs["back_to_back"] for x in o["reads"] if x[0] == 200]
        out["read_ms"] = median([d * 1000 for _, d, _ in good]) if good else 0
        out["read_bytes"] = median([n for _, _, n in good]) if good else 0
        extra_cpu = sum(o["cpu"] for o in runs["back_to_back"]) - sum(o["cpu"] for o in runs["idle"])
        out["cpu_ms_per_read"] = extra_cpu / len(good) * 1000 if good else 0
        return out
    finally:
        srv.stop()
        upstream.stop()


def max_open_files(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return line.split()[3]
    return "?"


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    load = open("/proc/loadavg").read().split()[:3]
    return f"{model}, {os.cpu_count()} CPUs, {mem} MiB, Linux {platform.release()}, load average {' '.join(load)} at start"


def git(*args):
    r = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True)
    return r.stdout.strip()


def version(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def main():
    for path in (LOADGEN, OPENLOOP, REFSERVER, MALLOCOUNT, UDPRELAYD):
        if not os.path.exists(path):
            sys.exit(f"missing {path}: run `make bench`")
    started = time.time()
    info = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")}
    with tempfile.TemporaryDirectory(prefix="udprelayd-bench-") as tmp:
        relay = relay_supported(tmp)
        if not relay:
            log("udprelayd has no forward mode yet: forward rows are n/a for udprelayd")
        servers = start_servers(tmp, relay)
        try:
            only_open = ONLY == ["open"]
            rows = [] if only_open else run_matrix(servers, relay)
            extra = {}
            if os.environ.get("BENCH_OPEN", "1") != "0" and (not ONLY or "open" in ONLY):
                extra["open"] = run_openloop(servers)
            if (not ONLY or "extras" in ONLY) and not only_open:
                if "udprelayd" in SERVERS:
                    extra["alloc_echo"] = measure_allocations(tmp, "echo")
                    if relay:
                        extra["alloc_forward"] = measure_allocations(tmp, "forward", servers["upstream"].port)
                    extra["startup"] = measure_startup(tmp)
                extra["sessions"] = measure_sessions(tmp, servers)
                if "udprelayd" in SERVERS and relay:
                    extra["sessions_read"] = measure_sessions_read(tmp)
        finally:
            for s in servers.values():
                s.stop()
    elapsed = time.time() - started
    report = render(info, rows, extra, relay, elapsed)
    print(report)
    out = os.environ.get("BENCH_OUT", "BENCHMARKS.md" if not ONLY and SERVERS == ALL_SERVERS else "-")
    if out != "-":
        findings = os.path.join(ROOT, "Benchmarks/FINDINGS.md")
        with open(os.path.join(ROOT, out) if not os.path.isabs(out) else out, "w") as f:
            f.write(report)
            if os.path.exists(findings):
                f.write("\n" + open(findings).read())
        log(f"wrote {out}")
    bad = [r for r in rows + extra.get("open", []) + [extra["sessions_read"][k] for k in ("idle", "every_second", "back_to_back") if "sessions_read" in extra]
           if r.get("lost") or r.get("corrupt")]
    if bad:
        log("some datagrams were lost or corrupted: see the lost / corrupt column")
        sys.exit(1)


def vs_nginx(rows):
    """Forward rates of udprelayd (and without GSO) as ratios to nginx's in the same run."""
    rate = {(r["payload"], r["window"], r["server"]): r["rate"] for r in rows if r["mode"] == "forward" and "rate" in r}
    lines = []
    for payload in (64, 1400):
        for window in (1, 64):
            nginx = rate.get((payload, window, "nginx"))
            if not nginx:
                continue
            parts = [f"{rate[(payload, window, name)] / nginx:.2f}x" if (payload, window, name) in rate else "n/a"
                     for name in ("udprelayd", "udprelayd-nogso", "cref")]
            lines.append(f"| {payload} | {window} | " + " | ".join(parts) + " |")
    if not lines:
        return []
    return ["Forward rates as a ratio to nginx's in this run:", "",
            "| payload | W | " + " | ".join(n for n in ("udprelayd", "udprelayd-nogso", "cref")) + " |",
            "|---|---|---|---|---|", *lines, ""]


def render(info, rows, extra, relay, elapsed):
    L = ["# udprelayd benchmark", "",
         "Generated by `make bench` (Benchmarks/bench.py); do not edit the figures by hand.", "",
         f"- Date: {info['date']}",
         f"- Commit: {info['commit']}",
         f"- Machine: {info['machine']}",
         (f"- Pinning: servers (and the upstream echo of forward cases) on CPU {SERVER_CPU}, load client on CPU {CLIENT_CPU}"
          if SERVER_CPU else "- Pinning: none (one CPU)") + ("; all at SCHED_FIFO priority 10 (BENCH_RT)" if RT else "; normal priority"),
         f"- Versions: {version([UDPRELAYD, '--version'])} (udprelayd), {version(['nginx', '-v'])}, {version(['socat', '-V'])[:60]}",
         f"- Method: closed loop, {REPS} repetitions of {SECONDS:g} s per case (first 0.2 s not measured), servers interleaved; "
         "figures are medians; \"vs C ref\" divides by the C reference's median in this same run. "
         "W=1 uses one client socket, W=64 four. Every reply is checked byte for byte. Total time "
         f"{elapsed:.0f} s.",
         "- CPU is the server process's utime+stime (all threads; for socat and nginx, all its processes) per "
         "million client round trips; for forward that is two datagrams in and two out per round trip.",
         "", table(rows), ""]
    L += vs_nginx(rows)
    if extra.get("open"):
        L += ["## Open loop: CPU at fixed offered rates", "",
              f"Benchmarks/openloop.c sends 64-byte datagrams on a fixed schedule (not driven by replies) from 8 "
              f"client sockets for {OPEN_SECONDS:g} s per rate, {REPS} repetitions, and checks every reply. CPU is the "
              "server's utime+stime (all threads and child processes: nginx's workers too) over the window divided by "
              "the wall time (CPU %) and by the datagrams offered (CPU µs per datagram; for forward one datagram "
              "offered is two received and two sent by the relay; CPU time from the scheduler's per-thread nanoseconds, "
              "`/proc/TID/schedstat`, rather than clock ticks). \"vs C ref\" divides by the C reference's "
              "median at the same rate in this run. Round-trip times are from each datagram's scheduled send time. "
              "System calls per datagram come from one more run per rate under `perf stat -e raw_syscalls:sys_enter` "
              "(all threads and processes of the server): unlike CPU time, the machine's other load does not move them.",
              "", open_table(extra["open"]), ""]
    if "sessions_read" in extra:
        sr = extra["sessions_read"]
        L += ["## What a `/sessions` read costs the datapath", "",
              f"A forwarder holds {sr['sessions']:,} live sessions (listed by `/sessions?limit=1000`) and carries "
              f"open-loop traffic at {sr['rate']:,} datagrams/s ({OPEN_SECONDS:g} s, {REPS} repetitions, medians) while "
              "a client reads `/sessions?limit=1000` over new connections: never, once a second, or back to back; "
              "the three interleave. CPU is the whole daemon's (status thread included). The daemon is pinned to "
              "one CPU here, so its status thread renders the JSON on the worker's CPU (at the same real-time "
              "priority when BENCH_RT is on): the p99 column shows that sharing, which a daemon with a CPU "
              "to spare does not pay.", "",
              "| reader | reads answered (not 200) | reads/s | server CPU % | p50 µs | p99 µs | lost / corrupt |",
              "|---|---|---|---|---|---|---|"]
        for kind, label in (("idle", "none"), ("every_second", "once a second"), ("back_to_back", "back to back")):
            k = sr[kind]
            L.append(f"| {label} | {k['reads']} ({k['failed_reads']}) | {k['reads_per_s']:.1f} | {k['cpu_pct']:.1f} "
                     f"| {k['p50']:.0f} | {k['p99']:.0f} | {k['lost']} / {k['corrupt']} |")
        L += ["", f"- One read: median {sr['read_ms']:.1f} ms and {sr['read_bytes'] / 1024:.0f} KiB; "
              f"{sr['cpu_ms_per_read']:.2f} ms of daemon CPU (back-to-back runs minus runs without reads, per read).", ""]
    if not relay:
        L += ["udprelayd's forward rows are n/a: `mode = forward` had not landed when this ran.", ""]
    if "alloc_echo" in extra:
        L += ["## Heap allocations per datagram (steady state)", "",
              "Counted with Benchmarks/mallocount.c (LD_PRELOAD; malloc, calloc, realloc, aligned allocators) "
              "between two snapshots around a fixed number of 64-byte round trips, after a warm-up.", "",
              "| mode | W | round trips | allocations | per datagram |", "|---|---|---|---|---|"]
        for key, mode in (("alloc_echo", "echo"), ("alloc_forward", "forward")):
            for w, a in extra.get(key, {}).items():
                L.append(f"| {mode} | {w} | {a['replies']} | {a['allocs']} | {a['per_datagram']:.4f} |")
        L.append("")
    if "startup" in extra:
        st = extra["startup"]
        L += ["## Start-up time to first echo", "",
              "From exec to the first reply to a probe sent every millisecond (median of 5).", "",
              f"- udprelayd: {st['udprelayd'] * 1000:.1f} ms", f"- C reference: {st['cref'] * 1000:.1f} ms", ""]
    if extra.get("sessions"):
        L += [f"## Memory with {SESSIONS:,} live sessions (forward)", "",
              "Each of that many loopback source addresses sends one datagram through a fresh forwarder; RSS after.", "",
              "| server | RSS before | RSS after | peak RSS | sessions answered | lost | open-file limit "
              f"| per session | RSS at {SESSIONS:,} sessions (extrapolated if fewer answered) |",
              "|---|---|---|---|---|---|---|---|---|"]
        for name, m in extra["sessions"].items():
            per = (m["rss_kib"] - m["base_kib"]) / m["replies"] if m["replies"] else 0
            at = m["base_kib"] + per * SESSIONS
            L.append(f"| {name} | {m['base_kib'] / 1024:.1f} MiB | {m['rss_kib'] / 1024:.1f} MiB | "
                     f"{m['hwm_kib'] / 1024:.1f} MiB | {m['replies']} | {m['lost']} | {m['nofile']} "
                     f"| {per * 1024:.0f} B | {at / 1024:.1f} MiB |")
        L += ["", "A forwarder that gives each session its own connected upstream socket cannot hold more "
              "sessions than its open-file limit allows; the C reference does exactly that.", ""]
        L.append("")
    elif "sessions" in extra:
        L += ["## Memory with live sessions", "", "Not measured: needs udprelayd's forward mode.", ""]
    return "\n".join(L)


if __name__ == "__main__":
    main()
