#!/usr/bin/python3
"""End-to-end checks of udprelayd's status endpoint with the tools our users script with.

Run by StatusEndToEndTests (XCTest) against a daemon it started; uses Debian's python3-requests,
python3-prometheus-client, python3-jsonschema, curl and chromium. Exits non-zero if any check
fails, printing one line per check.

    status_e2e.py --base http://127.0.0.1:PORT --schema docs/status.schema.json
                  --screenshot .build/status-page.png
                  --echo NAME=ADDR,ADDR --echo NAME=ADDR --relay NAME=ADDR

    status_e2e.py --fit-page PAGE.html --screenshot-dir DIR
        checks only that a saved page fits the viewport at every width below (used by
        RenderingTests on a worst-case page).
"""
import argparse
import html
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import jsonschema
import requests
from prometheus_client.parser import text_string_to_metric_families

LIMIT = 64  # documented connection limit
TIMEOUT = 10
# A large desktop, a laptop, a small laptop or tablet, a phone in portrait.
WIDTHS = [(1920, 1080), (1400, 900), (1024, 768), (400, 860)]


def page_fits(page_html, outdir, widths=WIDTHS):
    """Loads the page in headless Chromium at each width and returns, per width, the page's
    scrollWidth and its viewport's innerWidth (it fits when the first is not larger), taking a
    screenshot of each (DIR/page-WIDTH.png). Chromium's headless window is at least 500 px wide,
    so the page is shown in an iframe of the exact width inside a wrapper page; the wrapper
    reads the iframe's document (same origin with --allow-file-access-from-files)."""
    os.makedirs(outdir, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory() as work:
        page = os.path.join(work, "page.html")
        with open(page, "w") as f:
            # No reload while Chromium looks at it.
            f.write(page_html.replace('http-equiv="refresh"', 'data-refresh-removed="refresh"'))
        for width, height in widths:
            wrapper = os.path.join(work, f"wrap-{width}.html")
            with open(wrapper, "w") as f:
                f.write(f"""<!DOCTYPE html><html><body style="margin:0;background:#fff">
<iframe id="f" src="page.html" style="border:0;display:block;width:{width}px;height:{height}px"></iframe>
<script>
const f = document.getElementById("f");
f.onload = () => {{
  const d = f.contentDocument;
  document.body.setAttribute("data-fit", d.documentElement.scrollWidth + " " + f.contentWindow.innerWidth);
}};
</script></body></html>""")
            with tempfile.TemporaryDirectory() as profile:
                common = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          "--no-first-run", "--allow-file-access-from-files", f"--user-data-dir={profile}",
                          f"--window-size={max(width, 500)},{height}"]
                dom = subprocess.run(common + ["--dump-dom", "file://" + wrapper],
                                     capture_output=True, text=True, timeout=90)
                shot_path = os.path.join(outdir, f"page-{width}.png")
                shot = subprocess.run(common + [f"--screenshot={shot_path}", "file://" + wrapper],
                                      capture_output=True, text=True, timeout=90)
            assert shot.returncode == 0, shot.stderr[-2000:]
            m = re.search(r'data-fit="(\d+) (\d+)"', dom.stdout)
            assert m, f"no measurement at {width} px: {dom.stderr[-1000:]}"
            results[width] = (int(m.group(1)), int(m.group(2)))
    return results


def assert_page_fits(page_html, outdir):
    results = page_fits(page_html, outdir)
    for width, (scroll, inner) in results.items():
        assert inner == width, f"viewport at {width} px is {inner} px"
        assert scroll <= inner, f"at {width} px the page is {scroll} px wide: it overflows by {scroll - inner} px"
    return results


def parse_address(text):
    if text.startswith("["):
        host, port = text[1:].split("]:")
        return (socket.AF_INET6, (host, int(port)))
    host, port = text.rsplit(":", 1)
    return (socket.AF_INET, (host, int(port)))


class Checks:
    def __init__(self, args):
        self.base = args.base.rstrip("/")
        self.schema = json.load(open(args.schema))
        self.screenshot = args.screenshot
        self.echo = dict(self.split(e) for e in args.echo)
        self.relay = dict(self.split(e) for e in args.relay)
        self.listeners = {**self.echo, **self.relay}
        host, port = self.base.split("//")[1].rsplit(":", 1)
        self.host, self.port = host, int(port)

    @staticmethod
    def split(spec):
        name, addrs = spec.split("=", 1)
        return name, [parse_address(a) for a in addrs.split(",")]

    # helpers ------------------------------------------------------------------------------

    def status(self, query=""):
        r = requests.get(self.base + "/status" + query, headers={"Connection": "close"}, timeout=TIMEOUT)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def metrics(self):
        r = requests.get(self.base + "/metrics", headers={"Connection": "close"}, timeout=TIMEOUT)
        assert r.status_code == 200, r.status_code
        samples = {}
        for family in text_string_to_metric_families(r.text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return r.text, samples

    def by_name(self, doc):
        return {l["name"]: l for l in doc["listeners"]}

    @staticmethod
    def echo_round(address, payloads):
        """Sends each payload and waits for its echo; returns the bytes sent."""
        family, addr = address
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            total = 0
            for p in payloads:
                s.sendto(p, addr)
                got, _ = s.recvfrom(70000)
                assert got == p, "echo changed the payload"
                total += len(p)
            return total

    def tcp(self):
        s = socket.create_connection((self.host, self.port), timeout=TIMEOUT)
        return s

    @staticmethod
    def read_to_end(s, timeout=TIMEOUT):
        s.settimeout(timeout)
        out = b""
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    return out, "eof"
                out += b
        except ConnectionResetError:
            return out, "reset"
        except socket.timeout:
            return out, "timeout"

    @staticmethod
    def read_response(s, timeout=TIMEOUT):
        """One response (head + Content-Length body), without waiting for the close."""
        s.settimeout(timeout)
        data = b""
        while b"\r\n\r\n" not in data:
            b = s.recv(4096)
            if not b:
                return data
            data += b
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        length = int(m.group(1)) if m else 0
        while len(body) < length:
            b = s.recv(65536)
            if not b:
                break
            body += b
        return head + b"\r\n\r\n" + body

    def wait_until_no_other_connections(self):
        """Returns how many of its own attempts were refused (503) because the server was full."""
        # Our own request is the one open connection once earlier ones are closed.
        deadline = time.time() + 10
        refused = 0
        while True:
            r = requests.get(self.base + "/status", headers={"Connection": "close"}, timeout=TIMEOUT)
            if r.status_code == 503:  # still full: the closes are not processed yet
                refused += 1
                assert time.time() < deadline, "the status endpoint stays full"
                time.sleep(0.05)
                continue
            open_now = r.json()["status_server"]["connections_open"]
            if open_now == 1:
                return refused
            assert time.time() < deadline, f"{open_now} status connections still open"
            time.sleep(0.05)

    # checks -------------------------------------------------------------------------------

    def check_curl_each_endpoint(self):
        expected = {
            "/healthz": "text/plain; charset=utf-8",
            "/status": "application/json",
            "/metrics": "text/plain; version=0.0.4; charset=utf-8",
            "/": "text/html; charset=utf-8",
        }
        with tempfile.TemporaryDirectory() as tmp:
            for path, ctype in expected.items():
                body, head = os.path.join(tmp, "body"), os.path.join(tmp, "head")
                code = subprocess.run(["curl", "-sS", "--max-time", "10", "-o", body, "-D", head, "-w", "%{http_code}",
                                       self.base + path], capture_output=True, text=True, check=True).stdout
                assert code == "200", (path, code)
                headers = {}
                for line in open(head, newline="").read().split("\r\n")[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                assert headers["content-type"] == ctype, (path, headers)
                assert int(headers["content-length"]) == os.path.getsize(body), (path, headers)
                assert headers["cache-control"] == "no-store", (path, headers)
                head_only = subprocess.run(["curl", "-sS", "--max-time", "10", "-I", self.base + path],
                                           capture_output=True, text=True, check=True).stdout
                assert head_only.startswith("HTTP/1.1 200"), (path, head_only)
                assert re.search(r"(?i)content-length: [1-9]", head_only), head_only
        out = subprocess.run(["curl", "-sS", self.base + "/healthz"], capture_output=True, text=True, check=True).stdout
        assert out == "ok\n", out

    def check_counters_move_by_exactly_the_datagrams_sent(self):
        before = self.by_name(self.status())
        _, m_before = self.metrics()
        sent = {}
        for name, addresses in self.listeners.items():
            packets = bytes_ = 0
            for i, address in enumerate(addresses):
                payloads = [bytes([(i * 7 + n) % 256]) * (1 + (n * 37) % 1400) for n in range(40 + i)]
                bytes_ += self.echo_round(address, payloads)
                packets += len(payloads)
            sent[name] = (packets, bytes_)
        def expected_for(after):
            # A relay's upstream may be one of our echo listeners: its datagrams count there too.
            expected = dict(sent)
            for name in self.relay:
                for upstream in after[name]["upstreams"]:
                    for other, listener in after.items():
                        if upstream["address"] in listener["addresses"]:
                            p, b = expected[other]
                            expected[other] = (p + sent[name][0], b + sent[name][1])
            return expected

        def settled(after, expected):
            # Packets and bytes: a worker adds them one after the other, and a snapshot taken
            # between the two has the packets of a send but not yet its bytes.
            return all((after[n][d]["packets"] - before[n][d]["packets"], after[n][d]["bytes"] - before[n][d]["bytes"]) == (p, b)
                       for n, (p, b) in expected.items() for d in ("received", "sent"))

        # A worker counts a reply just after sending it, so the client can hold the reply a
        # moment before the counter moves (seen under ThreadSanitizer): wait for the counters
        # to reach the expected totals, up to a deadline, then assert exactly.
        deadline = time.time() + 10
        with requests.Session() as session:  # keep-alive: both documents over one connection
            while True:
                after = self.by_name(session.get(self.base + "/status", timeout=TIMEOUT).json())
                expected = expected_for(after)
                if settled(after, expected) or time.time() > deadline:
                    break
                time.sleep(0.02)
            narrowed = {n: session.get(self.base + "/status", params={"listener": n}, timeout=TIMEOUT).json()
                        for n in self.listeners}
        _, m_after = self.metrics()
        for name, (packets, bytes_) in expected.items():
            for direction in ("received", "sent"):
                d_packets = after[name][direction]["packets"] - before[name][direction]["packets"]
                d_bytes = after[name][direction]["bytes"] - before[name][direction]["bytes"]
                assert (d_packets, d_bytes) == (packets, bytes_), (name, direction, d_packets, d_bytes, packets, bytes_)
                metric = f"udprelayd_packets_{direction}_total"
                key = (metric, (("listener", name),))
                assert m_after[key] - m_before[key] == packets, (key, m_before[key], m_after[key], packets)
                key = (f"udprelayd_bytes_{direction}_total", (("listener", name),))
                assert m_after[key] - m_before[key] == bytes_, key
            # Per-socket counters: one sample per entry of workers[], numbered from 1 per address,
            # adding up to the listener's totals.
            workers = after[name]["workers"]
            for direction in ("received", "sent"):
                keys = [k for k in m_after if k[0] == f"udprelayd_worker_packets_{direction}_total" and ("listener", name) in k[1]]
                assert len(keys) == len(workers), (name, keys, workers)
                moved = sum(m_after[k] - m_before.get(k, 0) for k in keys)
                assert moved == packets, (name, direction, moved, packets)
                numbered = sorted((dict(k[1])["address"], dict(k[1])["worker"]) for k in keys)
                expected_numbers = sorted((w["address"], str(sum(1 for v in workers[:i + 1] if v["address"] == w["address"])))
                                          for i, w in enumerate(workers))
                assert numbered == expected_numbers, (name, numbered, expected_numbers)
            only = narrowed[name]["listeners"]
            assert [l["name"] for l in only] == [name], only
            assert only[0]["received"]["packets"] >= after[name]["received"]["packets"]
        for name in self.relay:
            up = after[name]["upstreams"]
            assert len(up) == 1 and up[0]["state"] == "up", up
            assert up[0]["sent"]["packets"] - sum(u["sent"]["packets"] for u in before[name]["upstreams"]) == sent[name][0]
            assert after[name]["sessions"]["created"] >= 1, after[name]["sessions"]
            key = ("udprelayd_upstream_up", (("listener", name), ("upstream", up[0]["address"])))
            assert m_after[key] == 1, key
        r = requests.get(self.base + "/status", params={"listener": "no-such"}, timeout=TIMEOUT)
        assert r.status_code == 404 and "no-such" in r.json()["error"], r.text

    def check_json_validates_against_the_schema(self):
        validator = jsonschema.Draft202012Validator(self.schema)
        jsonschema.Draft202012Validator.check_schema(self.schema)
        for query in [""] + [f"?listener={n}" for n in self.listeners]:
            doc = self.status(query)
            errors = sorted(validator.iter_errors(doc), key=str)
            assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
        doc = self.status()
        assert set(self.by_name(doc)) == set(self.listeners), doc["listeners"]
        for name, addresses in self.listeners.items():
            bound = self.by_name(doc)[name]["addresses"]
            assert len(bound) == len(addresses), (name, bound)

    def check_metrics_parse_with_prometheus_client(self):
        text, samples = self.metrics()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name, ftype in [("udprelayd_build_info", "gauge"), ("process_start_time_seconds", "gauge"),
                            ("udprelayd_packets_received", "counter"), ("udprelayd_drops", "counter"),
                            ("udprelayd_sessions_active", "gauge"), ("udprelayd_upstream_up", "gauge")]:
            assert name in families, (name, sorted(families))
            assert families[name].type == ftype, (name, families[name].type)
            assert families[name].documentation, name
        for name in self.listeners:
            assert ("udprelayd_listener_info", tuple(sorted({"listener": name, "mode": "forward" if name in self.relay else "echo"}.items()))) in samples, name
            drops = [k for k in samples if k[0] == "udprelayd_drops_total" and ("listener", name) in k[1]]
            assert {dict(k[1])["reason"] for k in drops} >= {"too_large", "send_buffer_full", "refused", "send_error"}, drops
        for name in self.relay:
            assert ("udprelayd_sessions_active", (("listener", name),)) in samples, name
        assert families["udprelayd_worker_packets_received"].type == "counter", families["udprelayd_worker_packets_received"].type
        listeners = self.status()["listeners"]
        assert any(len(set(w["address"] for w in l["workers"])) < len(l["workers"]) for l in listeners), \
            "StatusEndToEndTests starts one listener with workers = 2"
        for listener in listeners:
            for a in set(w["address"] for w in listener["workers"]):
                n = sum(1 for w in listener["workers"] if w["address"] == a)
                for k in range(1, n + 1):
                    key = ("udprelayd_worker_packets_received_total",
                           tuple(sorted({"listener": listener["name"], "address": a, "worker": str(k)}.items())))
                    assert key in samples, (key, sorted(s for s in samples if s[0].startswith("udprelayd_worker_")))
        lines = [l for l in text.splitlines() if l and not l.startswith("#")]
        assert all(re.match(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? \S+$", l) for l in lines)

    def check_errors_over_requests(self):
        r = requests.get(self.base + "/nope", timeout=TIMEOUT)
        assert r.status_code == 404, r.status_code
        r = requests.post(self.base + "/status", data=b"x", timeout=TIMEOUT)
        assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD", (r.status_code, r.headers)
        r = requests.delete(self.base + "/metrics", timeout=TIMEOUT)
        assert r.status_code == 405, r.status_code
        r = requests.head(self.base + "/status", timeout=TIMEOUT)
        assert r.status_code == 200 and int(r.headers["Content-Length"]) > 0 and r.content == b""

    def check_page_in_headless_chromium(self):
        os.makedirs(os.path.dirname(self.screenshot) or ".", exist_ok=True)
        if os.path.exists(self.screenshot):
            os.unlink(self.screenshot)
        with tempfile.TemporaryDirectory() as profile:
            common = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                      "--no-first-run", f"--user-data-dir={profile}", "--window-size=1366,768"]
            shot = subprocess.run(common + [f"--screenshot={self.screenshot}", self.base + "/"],
                                  capture_output=True, text=True, timeout=90)
            assert shot.returncode == 0, shot.stderr[-2000:]
            dom = subprocess.run(common + ["--dump-dom", self.base + "/"], capture_output=True, text=True, timeout=90)
            assert dom.returncode == 0, dom.stderr[-2000:]
        with open(self.screenshot, "rb") as f:
            png = f.read()
        assert png.startswith(b"\x89PNG") and len(png) > 10000, len(png)
        text = html.unescape(re.sub(r"<[^>]+>", " ", dom.stdout))
        for name, addresses in self.listeners.items():
            assert re.search(rf"\b{re.escape(name)}\b", text), f"page text lacks listener {name}"
        doc = self.status()
        for listener in doc["listeners"]:
            for a in listener["addresses"]:
                assert a in text, f"page text lacks address {a}"
        assert "HEALTHY" in text, "page shows health"
        for listener in doc["listeners"]:
            if len(set(w["address"] for w in listener["workers"])) < len(listener["workers"]):
                assert "worker 2 of 2" in text, f"page lacks the worker split of {listener['name']}"
        print(f"    screenshot: {self.screenshot} ({len(png)} bytes)")

    def check_page_fits_every_width(self):
        page = requests.get(self.base + "/", timeout=TIMEOUT).text
        results = assert_page_fits(page, os.path.dirname(self.screenshot) or ".")
        print("    widths (page/viewport): " + ", ".join(f"{w}: {s}/{i}" for w, (s, i) in results.items()))

    def check_slow_and_malformed_clients_while_echo_flows(self):
        echo_name = next(iter(self.echo))
        echo_address = self.echo[echo_name][0]
        stop = threading.Event()
        result = {"sent": 0, "lost": 0, "worst": 0.0}

        def ping():
            family, addr = echo_address
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.settimeout(2)
                n = 0
                while not stop.is_set():
                    payload = n.to_bytes(8, "big") * 8
                    t = time.time()
                    s.sendto(payload, addr)
                    result["sent"] += 1
                    try:
                        while True:
                            got, _ = s.recvfrom(2048)
                            if got == payload:
                                break
                    except socket.timeout:
                        result["lost"] += 1
                    result["worst"] = max(result["worst"], time.time() - t)
                    n += 1
                    time.sleep(0.001)

        pinger = threading.Thread(target=ping)
        pinger.start()
        try:
            self.wait_until_no_other_connections()
            before = self.status()["status_server"]["connections_rejected"]["limit"]

            # 200 connections at once: the first 64 are served and kept alive, the rest get 503.
            socks = [self.tcp() for _ in range(200)]
            for s in socks:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answers = [self.read_response(s) for s in socks]
            codes = [a.split(b" ", 2)[1].decode() if a.startswith(b"HTTP/1.1 ") else "none" for a in answers]
            assert codes.count("200") == LIMIT and codes.count("503") == 200 - LIMIT, {c: codes.count(c) for c in set(codes)}
            assert all(codes[i] == "200" for i in range(LIMIT)), "the first connections are the ones served"
            for s in socks:
                s.close()
            # The server sees the closes a moment later; until then it may still be full.
            refused_meanwhile = self.wait_until_no_other_connections()
            after = self.status()["status_server"]["connections_rejected"]["limit"]
            assert after - before == 200 - LIMIT + refused_meanwhile, (before, after, refused_meanwhile)

            # A partial request head held open: 408 after 5 s, then close. Meanwhile the others.
            partial = {}

            def hold():
                s = self.tcp()
                s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: yes")
                t = time.time()
                partial["data"], partial["end"] = self.read_to_end(s, timeout=15)
                partial["elapsed"] = time.time() - t
                s.close()

            holder = threading.Thread(target=hold)
            holder.start()

            s = self.tcp()  # a 20 KiB header
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20480 + b"\r\n\r\n")
            data, end = self.read_to_end(s)
            s.close()
            assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), data[:200]
            assert end == "eof", f"431 must end with an orderly close, not a {end}"

            s = self.tcp()  # garbage bytes
            s.sendall(os.urandom(64).replace(b"\n", b"") + b"\r\n\r\n")
            data, end = self.read_to_end(s)
            s.close()
            assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n"), data[:200]

            # The endpoint still answers while the slow client waits.
            assert requests.get(self.base + "/healthz", timeout=TIMEOUT).text == "ok\n"

            holder.join(20)
            assert partial["data"].startswith(b"HTTP/1.1 408 Request Timeout\r\n"), partial
            assert 4.5 <= partial["elapsed"] <= 8, partial["elapsed"]
            assert partial["end"] == "eof", partial["end"]
        finally:
            stop.set()
            pinger.join()
        assert result["sent"] > 100, result
        assert result["lost"] == 0, f"echo lost {result['lost']} of {result['sent']} datagrams meanwhile"
        print(f"    echo meanwhile: {result['sent']} round trips, none lost, worst {result['worst'] * 1000:.1f} ms")


def main():
    if "--fit-page" in sys.argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--fit-page", required=True)
        parser.add_argument("--screenshot-dir", required=True)
        args = parser.parse_args()
        with open(args.fit_page) as f:
            page = f.read()
        results = page_fits(page, args.screenshot_dir)
        bad = [w for w, (s, i) in results.items() if s > i or i != w]
        for w, (s, i) in results.items():
            print(f"{w} px: page {s} px, viewport {i} px{'  OVERFLOWS' if w in bad else ''}")
        sys.exit(1 if bad else 0)
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--screenshot", required=True)
    parser.add_argument("--echo", action="append", default=[])
    parser.add_argument("--relay", action="append", default=[])
    args = parser.parse_args()
    checks = Checks(args)
    names = [n for n in dir(Checks) if n.startswith("check_")]
    order = sorted(names, key=lambda n: Checks.__dict__[n].__code__.co_firstlineno)
    failed = 0
    for name in order:
        t = time.time()
        try:
            getattr(checks, name)()
            print(f"ok   {name} ({time.time() - t:.1f} s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {name} ({time.time() - t:.1f} s)\n{traceback.format_exc()}", flush=True)
    print(f"{len(order) - failed} of {len(order)} status checks passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
