#!/usr/bin/env bash
# End-to-end test of udprelayd under a real systemd 252 (Debian bookworm booted with
# systemd-nspawn by scripts/nspawn.sh). Part of `make test`. Needs root, systemd-container and
# debootstrap (scripts/install-deps.sh test); when it cannot run it says why and FAILS: CI runs
# as root and must run it.
#
# Usage: scripts/systemd-e2e.sh [BINARY]
#   BINARY: a udprelayd built with --static-swift-stdlib (default: builds one in .build-static).
# Environment: KEEP=1 leaves the container running for inspection (scripts/nspawn.sh stop NAME).
#
# What it shows inside the container, with the unit files from systemd/ as shipped (plus a test
# drop-in that shortens WatchdogSec to 2 s and TimeoutAbortSec to 2 s so it runs quickly):
#   start: `systemctl start` returns after READY=1, the unit is active (running), and journald
#          logs the daemon's "ready" line before systemd's "Started"; StatusText is the live
#          summary (and shows rates after a refresh); echo works over IPv4 and IPv6;
#   journal: start-up lines carry priorities (PRIORITY=6, warnings/errors 4/3) and fields
#          (LISTENER=); `journalctl -p err` shows a failed reload's errors;
#   reload: `systemctl reload` keeps MainPID, applies a new listener, StatusText says gen 2;
#          a bad file makes `systemctl reload` fail, keeps MainPID and echo, and StatusText
#          and /status (the status endpoint, served under the sandbox) say so;
#   watchdog: SIGSTOP on the main process -> watchdog timeout -> restart, NRestarts grows, a
#          new MainPID serves;
#   continuity: 2,000 datagrams/s each through an echo and a forward listener during
#          `systemctl restart`: none lost, and the forward sessions keep their upstream source
#          ports (listener sockets, session sockets and the session table go through systemd's
#          file descriptor store);
#   socket activation: with systemd/udprelayd.socket (FileDescriptorName=echo), a datagram to
#          the socket starts the service, which answers it from the inherited socket;
#   stop: `systemctl stop` ends cleanly (Result=success, exit status 0, "stopped" logged).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nspawn="$root/scripts/nspawn.sh"
name="udprelayd-e2e-$$"
failures=0
started=$(date +%s)

fail_setup() { echo "systemd-e2e: FAILED, cannot run: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail_setup "needs root (systemd-nspawn); run make test as root as CI does"
for tool in systemd-nspawn debootstrap nsenter; do
  command -v "$tool" >/dev/null || fail_setup "'$tool' missing: run scripts/install-deps.sh test"
done

binary=${1:-}
if [ -z "$binary" ]; then
  echo "systemd-e2e: building a release binary with --static-swift-stdlib (.build-static)" >&2
  (cd "$root" && ${SWIFT:-swift} build -c release --static-swift-stdlib --scratch-path .build-static --product udprelayd >&2)
  binary="$root/.build-static/release/udprelayd"
fi
[ -x "$binary" ] || fail_setup "no binary at $binary"

cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then
    echo "systemd-e2e: container '$name' left running (KEEP=1); stop with: $nspawn stop $name" >&2
  else
    "$nspawn" stop "$name" || true
  fi
}
trap cleanup EXIT

# The benchmark's load client and C echo server drive the restart-under-load check.
make -C "$root" --no-print-directory bench-tools >&2
"$nspawn" boot "$name" --bind-ro="$binary:/usr/sbin/udprelayd" --bind-ro="$root/.build/bench:/opt/bench" >/dev/null
echo "systemd-e2e: container '$name' booted ($(($(date +%s) - started)) s)" >&2

# Runs a command inside the container with a clean environment.
ct() { "$nspawn" exec "$name" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
ok() { echo "  ok: $*"; }
bad() { echo "  FAIL: $*"; failures=$((failures + 1)); }
check() {  # check DESCRIPTION COMMAND...: ok if the command succeeds
  local what=$1
  shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
prop() { ct systemctl show -p "$1" --value udprelayd.service; }
# Sends one datagram from inside the container, prints the reply (empty on timeout).
# socat waits 4 s for the reply: a service started by the datagram (socket activation) on a
# loaded machine may take a few seconds to answer.
udp() { printf '%s' "$2" | ct timeout 8 socat -T 4 - "$1" 2>/dev/null || true; }
# Waits up to $1 seconds for a shell condition (evaluated on the host) to hold.
wait_for() {
  local limit=$1 i
  shift
  for i in $(seq 1 $((limit * 10))); do
    if eval "$@"; then return 0; fi
    sleep 0.1
  done
  return 1
}

put_text() {  # put_text CONTAINER-PATH <<< text
  local tmp
  tmp=$(mktemp)
  cat >"$tmp"
  "$nspawn" put "$name" "$tmp" "$1" 0644
  rm -f "$tmp"
}

put_config() {
  put_text /etc/udprelayd/udprelayd.ini
}

good_config() {
  put_config <<'EOF'
[daemon]
log_level = info
[status]
listen = 127.0.0.1:9180
[listener echo]
listen = 127.0.0.1:7007, [::1]:7007
EOF
}

"$nspawn" put "$name" "$root/systemd/udprelayd.service" /etc/systemd/system/udprelayd.service
put_text /etc/systemd/system/udprelayd.service.d/e2e.conf <<'EOF'
# Test only: a short watchdog so the SIGSTOP case takes seconds, not minutes.
[Service]
WatchdogSec=2s
TimeoutAbortSec=2s
EOF
good_config
ct systemctl daemon-reload

echo "start"
if ct systemctl start udprelayd.service; then ok "systemctl start returned 0"; else bad "systemctl start failed"; fi
# Read first: the daemon replaces it with a summary with rates 3 s after start.
status=$(prop StatusText)
check "unit is active (running)" test "$(prop ActiveState)/$(prop SubState)" = active/running
check "StatusText is the summary: '$status'" grep -q '^1 listener (2 sockets); config gen 1$' <<<"$status"
# journald stores messages asynchronously: `systemctl start` can return before it has written
# the daemon's "ready" line or PID 1's "Started" line, so wait until both are there.
journal_has() { grep -q "$1" <<<"$(ct journalctl -u udprelayd.service -o cat --no-pager)"; }
wait_for 10 "journal_has '^ready listeners=' && journal_has '^Started udprelayd.service'" || true
journal=$(ct journalctl -u udprelayd.service -o cat --no-pager)
ready_line=$(grep -n '^ready listeners=' <<<"$journal" | head -n1 | cut -d: -f1 || true)
started_line=$(grep -n '^Started udprelayd.service' <<<"$journal" | head -n1 | cut -d: -f1 || true)
check "READY=1 came before systemd's Started (journal lines $ready_line < $started_line)" \
  test -n "$ready_line" -a -n "$started_line" -a "${ready_line:-0}" -lt "${started_line:-0}"
check "echo over IPv4" test "$(udp UDP4:127.0.0.1:7007 hello4)" = hello4
check "echo over IPv6" test "$(udp 'UDP6:[::1]:7007' hello6)" = hello6
check "StatusText refreshes with rates" wait_for 8 '[[ "$(prop StatusText)" == *"pkt/s in"* ]]'
echo "    StatusText: $(prop StatusText)"

echo "journal"
# "watchdog enabled" comes from a service that may start after READY=1: wait for journald to have it.
wait_for 10 "journal_has '^watchdog enabled'" || true
json=$(ct journalctl -u udprelayd.service -o json --no-pager)
check "start-up line with PRIORITY=6" grep -q '"MESSAGE":"starting .*"PRIORITY":"6"\|"PRIORITY":"6".*"MESSAGE":"starting ' <<<"$json"
check "listening line with PRIORITY=6 and LISTENER=echo" \
  bash -c 'grep "\"MESSAGE\":\"listening " | grep "\"PRIORITY\":\"6\"" | grep -q "\"LISTENER\":\"echo\""' <<<"$json"
check "watchdog enabled line" grep -q '"MESSAGE":"watchdog enabled' <<<"$json"
echo "    $(ct journalctl -u udprelayd.service -o short-monotonic --no-pager | grep -m1 'listening')"

echo "reload"
# The unit must not need procps' /bin/kill (minimal systems lack it).
ct rm -f /bin/kill /usr/bin/kill
pid=$(prop MainPID)
put_config <<'EOF'
[daemon]
log_level = info
[status]
listen = 127.0.0.1:9180
[listener echo]
listen = 127.0.0.1:7007, [::1]:7007
[listener extra]
listen = 127.0.0.1:7010
EOF
check "systemctl reload succeeds" ct systemctl reload udprelayd.service
check "MainPID unchanged after reload ($pid)" test "$(prop MainPID)" = "$pid"
# With Type=notify (no notify-reload before systemd 253), `systemctl reload` returns when
# ExecReload= has run, which may be before the daemon has handled SIGHUP: wait for its READY=1.
check "StatusText shows generation 2" wait_for 5 '[[ "$(prop StatusText)" == *"config gen 2, reloaded "* ]]'
check "new listener serves after reload" test "$(udp UDP4:127.0.0.1:7010 extra)" = extra
check "unchanged listener still serves" test "$(udp UDP4:127.0.0.1:7007 again)" = again

put_config <<'EOF'
[listener echo]
listen = 127.0.0.1:7007
mode = nonsense
EOF
if ct systemctl reload udprelayd.service 2>/dev/null; then bad "reload of a bad file should fail"; else ok "systemctl reload of a bad file fails"; fi
check "still active after the bad reload" test "$(prop ActiveState)" = active
check "MainPID unchanged after the bad reload" test "$(prop MainPID)" = "$pid"
check "still serving after the bad reload" test "$(udp UDP4:127.0.0.1:7007 still)" = still
check "StatusText shows the failed reload" wait_for 5 '[[ "$(prop StatusText)" == *"config gen 2, RELOAD FAILED"*"mode:"* ]]'
echo "    StatusText: $(prop StatusText)"
# GET over bash's /dev/tcp (no curl in the container); prints the body.
http_get() { ct bash -c "exec 3<>/dev/tcp/127.0.0.1/9180 && printf 'GET $1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3 && timeout 5 cat <&3" | sed '1,/^\r$/d'; }
status_json=$(http_get /status || true)
check "/status (served under the sandbox) shows the failed reload" \
  bash -c '[[ $1 =~ \"generation\":\ *2, ]] && [[ $1 =~ \"ok\":\ *false ]]' _ "$status_json"
check "journalctl -p err shows the reload error" \
  wait_for 10 "grep -q 'reload: /etc/udprelayd/udprelayd.ini:3: \[listener echo\] mode:' <<<\"\$(ct journalctl -u udprelayd.service -p err -o cat --no-pager)\""
good_config

echo "watchdog"
restarts=$(prop NRestarts)
ct sh -c "kill -STOP $pid"
check "frozen process is killed by the watchdog and restarted" \
  wait_for 20 '[ "$(prop NRestarts)" -gt "$restarts" ] && [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" != "$pid" ] && [ "$(prop MainPID)" != 0 ]'
echo "    NRestarts: $restarts -> $(prop NRestarts), MainPID: $pid -> $(prop MainPID)"
check "journal records the watchdog timeout" wait_for 10 "journal_has '[Ww]atchdog timeout'"
check "restarted service serves" test "$(udp UDP4:127.0.0.1:7007 back)" = back

echo "continuity: restart under load"
# An upstream echo server (the benchmark's C reference server) and a forward listener to it.
ct systemd-run --quiet --unit=e2e-upstream /opt/bench/refserver echo 127.0.0.1:7100
put_config <<'EOF'
[daemon]
log_level = info
[status]
listen = 127.0.0.1:9180
[listener echo]
listen = 127.0.0.1:7007, [::1]:7007
[listener fwd]
listen = 127.0.0.1:7020
mode = forward
upstream = 127.0.0.1:7100
EOF
ct systemctl reload udprelayd.service
# Local ports of the sockets connected to the upstream (7100 = 0x1BBC): the relay's sessions.
session_ports() { ct cat /proc/net/udp /proc/net/udp6 | awk '$3 ~ /:1BBC$/ { split($2, a, ":"); print a[2] }' | sort | tr '\n' ' '; }
# 2,000 datagrams/s each through echo and forward for 6 s, from 8 client sockets each; every
# reply checked, 3 s allowed for the last ones.
ct sh -c '/opt/bench/openloop -t 127.0.0.1:7007 -r 2000 -d 6 -s 8 -p 64 -T 3000 > /tmp/ol-echo.json 2>&1; echo $? > /tmp/ol-echo.rc' &
load_echo=$!
ct sh -c '/opt/bench/openloop -t 127.0.0.1:7020 -r 2000 -d 6 -s 8 -p 64 -T 3000 > /tmp/ol-fwd.json 2>&1; echo $? > /tmp/ol-fwd.rc' &
load_fwd=$!
check "forward sessions open under load" wait_for 10 '[ "$(session_ports | wc -w)" -eq 8 ]'
ports_before=$(session_ports)
pid=$(prop MainPID)
check "systemctl restart under load succeeds" ct systemctl restart udprelayd.service
check "a new process serves ($pid -> $(prop MainPID))" test "$(prop MainPID)" != "$pid"
check "the new process took over listener sockets and sessions" \
  wait_for 10 "journal_has 'sessions of the previous process continued sessions.adopted=8 sessions.refused=0'"
ports_after=$(session_ports)
wait "$load_echo" "$load_fwd" || true
check "echo under restart: every datagram answered ($(ct cat /tmp/ol-echo.json | head -c 160))" test "$(ct cat /tmp/ol-echo.rc)" = 0
check "forward under restart: every datagram answered ($(ct cat /tmp/ol-fwd.json | head -c 160))" test "$(ct cat /tmp/ol-fwd.rc)" = 0
check "forward sessions keep their upstream source ports ($ports_before/ $ports_after)" \
  test -n "$ports_before" -a "$ports_before" = "$ports_after"
ct systemctl stop e2e-upstream.service || true
good_config
ct systemctl reload udprelayd.service

echo "socket activation"
ct systemctl stop udprelayd.service
# The shipped unit binds loopback only; here (a private network) its commented wildcard form,
# which also checks that replies on an inherited wildcard socket leave from the right address.
wild_socket=$(mktemp)
sed -e 's/^ListenDatagram=127.0.0.1:7007$/ListenDatagram=0.0.0.0:7007/' \
    -e 's/^ListenDatagram=\[::1\]:7007$/ListenDatagram=[::]:7007/' "$root/systemd/udprelayd.socket" > "$wild_socket"
grep -q '^ListenDatagram=0.0.0.0:7007$' "$wild_socket" && grep -q '^ListenDatagram=\[::\]:7007$' "$wild_socket" \
  || { echo "systemd-e2e: udprelayd.socket no longer has the ListenDatagram lines this test rewrites" >&2; exit 1; }
"$nspawn" put "$name" "$wild_socket" /etc/systemd/system/udprelayd.socket
rm -f "$wild_socket"
ct systemctl daemon-reload
check "udprelayd.socket starts" ct systemctl start udprelayd.socket
check "service is not running yet" test "$(prop ActiveState)" = inactive
check "first datagram starts the service and is answered" test "$(udp UDP4:127.0.0.1:7007 activated)" = activated
# The reply can leave between the daemon's start of serving and PID 1 handling its READY=1.
check "service active after activation" wait_for 5 '[ "$(prop ActiveState)" = active ]'
check "daemon used the inherited sockets for listener echo" \
  wait_for 10 "journal_has 'using sockets passed by systemd listener.name=echo sockets=2'"
check "echo over IPv6 through the socket unit" test "$(udp 'UDP6:[::1]:7007' six)" = six
check "socket unit's wildcard address serves another local address" test "$(udp UDP4:127.0.0.2:7007 wild)" = wild

echo "stop"
ct systemctl stop udprelayd.socket udprelayd.service
check "inactive after stop" test "$(prop ActiveState)" = inactive
check "clean stop: Result=success" test "$(prop Result)" = success
check "clean stop: exit status 0" test "$(prop ExecMainStatus)" = 0
# The daemon's last line may reach journald after `systemctl stop` has returned.
check "clean stop: 'stopped' logged" wait_for 10 "journal_has '^stopped'"

echo "systemd-e2e: $failures failure(s), $(($(date +%s) - started)) s" >&2
if [ "$failures" -ne 0 ]; then
  echo "--- journal of udprelayd.service ---" >&2
  ct journalctl -u udprelayd.service -o short-monotonic --no-pager | tail -n 60 >&2 || true
  exit 1
fi
