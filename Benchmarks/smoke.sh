#!/usr/bin/env bash
# Quick functional check of the benchmark's C pieces (run by `make test`; not a timed test):
# the load clients (closed and open loop) echo a bounded number of datagrams through the C reference, directly and
# through its forwarder, and must get every one back intact. Loss timeout 2 s, so a slow
# machine cannot make it fail.
set -euo pipefail
bin=${1:-.build/bench}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

start() { # start ARGS... ; sets $addr from the "ready IP:PORT" line
  coproc_out=$(mktemp)
  "$bin/refserver" "$@" >"$coproc_out" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 500); do
    addr=$(sed -n 's/^ready //p' "$coproc_out")
    [ -n "$addr" ] && break
    sleep 0.01
  done
  rm -f "$coproc_out"
  [ -n "$addr" ] || { echo "smoke: refserver $* did not start" >&2; exit 1; }
}

start echo 127.0.0.1:0; echo_addr=$addr
start forward 127.0.0.1:0 "$echo_addr"; fwd_addr=$addr
"$bin/loadgen" -t "$echo_addr" -w 8 -s 2 -p 100 -n 2000 -u 0 -d 20 -T 2000 >/dev/null
"$bin/loadgen" -t "$fwd_addr" -w 8 -s 2 -p 1400 -n 2000 -u 0 -d 20 -T 2000 >/dev/null
"$bin/loadgen" -t "$fwd_addr" -w 8 -a 50 -p 64 -n 200 -u 0 -d 20 -T 2000 >/dev/null
"$bin/openloop" -t "$fwd_addr" -r 2000 -d 0.5 -s 4 -T 3000 >/dev/null
echo "bench smoke: load client and C reference OK"
