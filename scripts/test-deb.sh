#!/usr/bin/env bash
# End-to-end test of the Debian package under a real systemd 252 (run by `make test`):
# builds the package (`make deb`, lintian included) and a newer build of it (a copy of the tree
# with the version bumped by scripts/set-version.sh and a changed example config), boots a fresh
# bookworm container with scripts/nspawn.sh, and inside it checks, with apt as a user would:
#   1. apt install ./udprelayd_V.deb: the service is enabled and active, and echoes over IPv4
#      and IPv6; the package version, `udprelayd --version` and /status agree; `man udprelayd`
#      and `man udprelayd.ini` render;
#   2. the user edits the conffile (and adds a forward listener, reloaded); apt install of the
#      newer build, while 2,000 datagrams/s go through an echo and a forward listener, keeps the
#      edited file (the maintainer's version lands beside it as .dpkg-dist), restarts the service
#      without losing a datagram or a relay session (same upstream source ports), and the
#      service runs with the edited configuration;
#   3. apt remove stops the service and keeps the configuration;
#   4. apt purge removes every file of the package and the configuration.
# Needs root (systemd-nspawn); fails loudly without it. Time: about a minute with a cached
# rootfs and SwiftPM build folder, a few minutes cold.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=udprelayd-pkgtest-$$
work="$root/.build-deb/test"
nspawn="$root/scripts/nspawn.sh"
# man-db renders the man pages inside the container (the container has no network for apt).
export NSPAWN_EXTRA_PACKAGES=man-db

if [ "$(id -u)" -ne 0 ]; then
  echo "test-deb: FAILED: must run as root (systemd-nspawn); CI runs as root" >&2
  exit 1
fi

started=$SECONDS
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
check() { # check DESCRIPTION COMMAND...: runs COMMAND on the host
  local what=$1; shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}
in_ct() { "$nspawn" exec "$name" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }
ct_sh() { in_ct sh -c "$1"; }
# apt inside the container; its chatter goes to $work/apt.log, shown when it fails.
apt_ct() {
  echo "+ apt-get $*" >> "$work/apt.log"
  in_ct apt-get -y -q "$@" >> "$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log" >&2; return 1; }
}

# --- Build the package and a newer build of it -------------------------------------------------
version=$("$root/scripts/version.sh")
arch=$(dpkg --print-architecture)
newer="$version+ctest1"
echo "test-deb: building udprelayd $version (make deb)"
SWIFT=${SWIFT:-$(command -v swift)} "$root/scripts/build-deb.sh" >/dev/null
deb="$root/udprelayd_${version}_${arch}.deb"

echo "test-deb: building the newer build $newer from a copy of the tree"
rm -rf "$work"
mkdir -p "$work/tree" "$work/debs"
(cd "$root" && git ls-files -z -co --exclude-standard | xargs -0 -I{} sh -c '[ -e "$1" ] && printf "%s\0" "$1"' _ {} \
  | tar --null -T - -cf -) | tar -C "$work/tree" -xf -
"$work/tree/scripts/set-version.sh" "$newer" "Package test build." "$work/tree" >/dev/null
# The maintainer's conffile changes too, so dpkg has to choose (and keeps the user's with confold).
printf '\n; This line is new in %s.\n' "$newer" >> "$work/tree/config/udprelayd.ini"
SRC="$work/tree" OUT="$work/debs" LINTIAN=0 "$root/scripts/build-deb.sh" >/dev/null
newdeb="$work/debs/udprelayd_${newer}_${arch}.deb"
[ -f "$newdeb" ] || { echo "test-deb: FAILED: $newdeb was not built" >&2; exit 1; }
build_time=$((SECONDS - started))
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/sbin/udprelayd > "$work/udprelayd"
check "/usr/sbin/udprelayd is stripped" sh -c "! readelf -S '$work/udprelayd' | grep -q '\.symtab'"
check "/usr/sbin/udprelayd needs no Swift runtime library" sh -c "! readelf -d '$work/udprelayd' | grep NEEDED | grep -qi swift"

# --- Boot a clean container ---------------------------------------------------------------------
trap '"$nspawn" stop "$name" || true' EXIT
# The benchmark's load client and C echo server drive the upgrade-under-load check.
make -C "$root" --no-print-directory bench-tools >&2
"$nspawn" boot "$name" --bind-ro="$root/.build/bench:/opt/bench" >/dev/null
"$nspawn" put "$name" "$deb" "/root/$(basename "$deb")"
"$nspawn" put "$name" "$newdeb" "/root/$(basename "$newdeb")"

# Waits until the unit is active (a Type=notify unit is active once READY=1 was sent).
wait_active() {
  local i
  for i in $(seq 1 100); do
    [ "$(in_ct systemctl is-active udprelayd.service 2>/dev/null)" = active ] && return 0
    sleep 0.1
  done
  return 1
}
# echo_ok ADDRESS: a datagram with a random token comes back unchanged (socat waits 3 s at
# most: a service just (re)started on a loaded machine can be slow to answer its first datagram).
echo_ok() {
  local token="pkgtest-$RANDOM-$RANDOM" reply
  reply=$(ct_sh "echo $token | socat -t 3 - UDP:$1" 2>/dev/null || true)
  [ "$reply" = "$token" ]
}
# journal_has TEXT: the service's journal of this boot contains TEXT within 10 s (journald
# stores messages asynchronously, so a line logged just now may not be readable yet).
journal_has() {
  local i
  for i in $(seq 1 50); do
    ct_sh "journalctl -b -u udprelayd.service -o cat | grep -qF -- '$1'" && return 0
    sleep 0.2
  done
  return 1
}
file_has() { ct_sh "grep -qF -- '$2' '$1'"; }
absent() { ! ct_sh "test -e '$1'"; }
status_field() { in_ct systemctl show -p "$1" --value udprelayd.service; }

# --- 1. Install ---------------------------------------------------------------------------------
check "apt install ./udprelayd_${version}_${arch}.deb" \
  apt_ct install "/root/$(basename "$deb")"
check "service enabled on install" test "$(in_ct systemctl is-enabled udprelayd.service)" = enabled
check "service active on install" wait_active
check "echo over IPv4 through the installed service" echo_ok 127.0.0.1:7007
check "echo over IPv6 through the installed service" echo_ok '[::1]:7007'
check "package version is $version" test "$(in_ct dpkg-query -W -f '${Version}' udprelayd)" = "$version"
check "udprelayd --version says $version" test "$(in_ct udprelayd --version)" = "$version"
# /status and /metrics, when the status endpoint is part of the build: bash's /dev/tcp (no curl there).
http_get() { in_ct bash -c "exec 3<>/dev/tcp/127.0.0.1/9180 && printf 'GET $1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3 && timeout 5 cat <&3" 2>/dev/null; }
if journal_has 'status listening'; then
  # The daemon says its status endpoint listens (the packaged config enables it on 127.0.0.1:9180):
  # it must answer under the packaged unit's sandbox (DynamicUser, no capabilities but binding).
  status=$(http_get /status || true)
  check "/status answers under the packaged unit" test -n "$status"
  check "/status reports version $version" grep -q "\"version\" *: *\"$version\"" <<<"$status"
  check "/metrics reports version $version" grep -q "udprelayd_build_info{.*version=\"$version\"" <<<"$(http_get /metrics || true)"
else
  echo "note: this build has no status endpoint; /status and /metrics versions not checked"
fi
check "docs installed: example config, capability drop-ins, changelog, status reference" ct_sh "cd /usr/share/doc/udprelayd && test -f examples/udprelayd.ini && test -f examples/transparent.conf && test -f examples/spoof.conf && test -f changelog.gz && test -f STATUS.md && test -f status.schema.json"
check "man udprelayd renders" ct_sh "MANPAGER=cat MANWIDTH=80 man udprelayd 2>&1 | grep -q 'UDP echo and relay daemon'"
check "man udprelayd.ini renders every section" ct_sh "MANPAGER=cat MANWIDTH=80 man 5 udprelayd.ini 2>/dev/null | grep -q 'max_datagram'"
check "man pages render without warnings" test -z "$(ct_sh 'MANPAGER=cat man --warnings udprelayd udprelayd.ini 2>&1 >/dev/null')"

# --- 2. Edit the conffile, upgrade to the newer build --------------------------------------------
# The user moves the small echo listener from port 7008 to 7018 and leaves a mark.
ct_sh "sed -i 's/^listen = 127.0.0.1:7008, \[::1\]:7008/listen = 127.0.0.1:7018, [::1]:7018/' /etc/udprelayd/udprelayd.ini && echo '; edited by the package test' >> /etc/udprelayd/udprelayd.ini"
check "edited config is valid" ct_sh "udprelayd --check-config --config /etc/udprelayd/udprelayd.ini >/dev/null"
# The user also adds a forward listener (to the benchmark's C echo server) and reloads, so the
# upgrade has relay sessions to carry over.
in_ct systemd-run --quiet --unit=test-upstream /opt/bench/refserver echo 127.0.0.1:7100
ct_sh "printf '\n[listener fwd]\nlisten = 127.0.0.1:7020\nmode = forward\nupstream = 127.0.0.1:7100\n' >> /etc/udprelayd/udprelayd.ini"
check "reload with a forward listener" in_ct systemctl reload udprelayd.service
# Local ports of the sockets connected to the upstream (7100 = 0x1BBC): the relay's sessions.
session_ports() { ct_sh "cat /proc/net/udp" | awk '$3 ~ /:1BBC$/ { split($2, a, ":"); print a[2] }' | sort | tr '\n' ' '; }
# 2,000 datagrams/s through echo and through forward while apt upgrades and restarts the
# service: every one must be answered (bounded: 20 s of sending, 3 s for the last replies).
ct_sh '/opt/bench/openloop -t 127.0.0.1:7007 -r 2000 -d 20 -s 8 -p 64 -T 3000 > /tmp/ol-echo.json 2>&1; echo $? > /tmp/ol-echo.rc' &
load_echo=$!
ct_sh '/opt/bench/openloop -t 127.0.0.1:7020 -r 2000 -d 20 -s 8 -p 64 -T 3000 > /tmp/ol-fwd.json 2>&1; echo $? > /tmp/ol-fwd.rc' &
load_fwd=$!
for i in $(seq 1 100); do [ "$(session_ports | wc -w)" -eq 8 ] && break; sleep 0.1; done
ports_before=$(session_ports)
pid_before=$(status_field MainPID)
check "apt install the newer build $newer (keep the edited conffile)" \
  apt_ct install -o Dpkg::Options::=--force-confold "/root/$(basename "$newdeb")"
check "service active after the upgrade under load" wait_active
ports_after=$(session_ports)
wait "$load_echo" "$load_fwd" || true
check "echo during the upgrade: every datagram answered ($(ct_sh 'head -c 120 /tmp/ol-echo.json'))" test "$(ct_sh 'cat /tmp/ol-echo.rc')" = 0
check "forward during the upgrade: every datagram answered ($(ct_sh 'head -c 120 /tmp/ol-fwd.json'))" test "$(ct_sh 'cat /tmp/ol-fwd.rc')" = 0
check "forward sessions keep their upstream source ports across the upgrade ($ports_before/ $ports_after)" \
  test -n "$ports_before" -a "$ports_before" = "$ports_after"
in_ct systemctl stop test-upstream.service || true
check "package version is $newer after upgrade" test "$(in_ct dpkg-query -W -f '${Version}' udprelayd)" = "$newer"
check "udprelayd --version says $newer after upgrade" test "$(in_ct udprelayd --version)" = "$newer"
check "edited conffile survives the upgrade" file_has /etc/udprelayd/udprelayd.ini '; edited by the package test'
check "maintainer's new conffile saved as .dpkg-dist" file_has /etc/udprelayd/udprelayd.ini.dpkg-dist "new in $newer"
check "service active after upgrade" wait_active
check "service restarted on upgrade (MainPID $pid_before -> $(status_field MainPID))" test "$(status_field MainPID)" != "$pid_before"
check "upgraded service runs the edited config (echo on 7018)" echo_ok 127.0.0.1:7018
if echo_ok 127.0.0.1:7008; then fail "port 7008 still echoes after the edit"; else ok "port 7008 no longer echoes after the edit"; fi

# Socket activation through the packaged example unit: the admin enables it, the service takes
# the sockets of listener "echo" from systemd.
check "udprelayd.socket shipped but not enabled" test "$(in_ct systemctl is-enabled udprelayd.socket 2>/dev/null || true)" = disabled
# The running service holds the ports, so it stops first (as udprelayd(8) says).
check "systemctl stop the service, enable --now udprelayd.socket, start the service" \
  in_ct sh -c 'systemctl stop udprelayd.service && systemctl enable --now udprelayd.socket 2>/dev/null && systemctl start udprelayd.service'
check "service active with the socket unit" wait_active
check "echo through the sockets passed by udprelayd.socket" echo_ok 127.0.0.1:7007
check "the service took listener echo's sockets from systemd (journal)" \
  journal_has 'using sockets passed by systemd listener.name=echo'

# --- 3. Remove ----------------------------------------------------------------------------------
check "apt remove udprelayd" apt_ct remove udprelayd
check "service stopped on remove" test "$(in_ct systemctl is-active udprelayd.service 2>/dev/null || true)" != active
check "socket unit stopped on remove" test "$(in_ct systemctl is-active udprelayd.socket 2>/dev/null || true)" != active
if echo_ok 127.0.0.1:7007; then fail "7007 still echoes after remove"; else ok "nothing echoes after remove"; fi
check "binary removed" absent /usr/sbin/udprelayd
check "edited config kept on remove" file_has /etc/udprelayd/udprelayd.ini '; edited by the package test'
check "dpkg status is config-files" test "$(in_ct dpkg-query -W -f '${db:Status-Status}' udprelayd)" = config-files

# --- 4. Purge -----------------------------------------------------------------------------------
check "apt purge udprelayd" apt_ct purge udprelayd
check "/etc/udprelayd removed on purge" absent /etc/udprelayd
purged=$(in_ct dpkg-query -W -f '${db:Status-Status}' udprelayd 2>/dev/null || echo not-installed)
check "dpkg status is not-installed after purge" test "$purged" = not-installed
# /var/cache/man holds man-db's formatted copies of pages viewed above (its own cache, which
# mandb prunes); /root holds the test's .deb files.
left=$(ct_sh "find / \( -path /proc -o -path /sys -o -path /dev -o -path /root -o -path /var/cache/man \) -prune -o -name '*udprelayd*' -print" || true)
check "no file named udprelayd left anywhere after purge${left:+: $left}" test -z "$left"

echo "test-deb: package build ${build_time}s, container test $((SECONDS - started - build_time))s"
echo "test-deb: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
