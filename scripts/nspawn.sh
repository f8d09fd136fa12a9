#!/usr/bin/env bash
# Boots a real systemd 252 (Debian bookworm) in a container, for end-to-end tests of units,
# packages and the daemon under systemd on machines whose PID 1 is not systemd. Needs root,
# systemd-container, debootstrap and util-linux (nsenter); see scripts/install-deps.sh test.
#
# Usage:
#   scripts/nspawn.sh rootfs
#       Builds the bookworm rootfs once (debootstrap minbase + systemd, dbus, procps, socat and
#       $NSPAWN_EXTRA_PACKAGES) and prints its path. Cached under $NSPAWN_CACHE (default
#       /var/cache/udprelayd-nspawn), one directory per package list; concurrent callers wait
#       on a lock instead of building twice. About 40 s and 250 MB cold, instant when cached.
#   scripts/nspawn.sh boot NAME [SYSTEMD-NSPAWN-OPTION...]
#       Boots the rootfs as container NAME in the background (--volatile=overlay: the cached
#       rootfs is never modified and every boot starts clean; --private-network: only `lo`),
#       waits until systemd has finished starting up, prints the container's PID 1 (host PID).
#       Extra options go to systemd-nspawn, e.g. --bind-ro=/host/udprelayd:/usr/bin/udprelayd
#       or --bind-ro=/host/dir:/mnt. NAME: letters, digits, '-', '_'.
#   scripts/nspawn.sh exec NAME COMMAND [ARG...]
#       Runs COMMAND inside the container (nsenter into every namespace of its PID 1) and
#       returns its exit status. stdin/stdout/stderr pass through. E.g.
#       `scripts/nspawn.sh exec t1 systemctl show -p MainPID --value udprelayd`.
#   scripts/nspawn.sh put NAME HOST-FILE CONTAINER-PATH [MODE]
#       Copies a file into the running container (parent directories created, MODE default 0644).
#   scripts/nspawn.sh leader NAME
#       Prints the container's PID 1 as a host PID (for nsenter, kill, /proc/PID/root).
#   scripts/nspawn.sh stop NAME
#       Powers the container off (SIGTERM to systemd-nspawn, SIGKILL after 10 s), removes its
#       cgroups and its state. Safe to call when it is not running (e.g. from a trap).
#
# The host uses cgroup v1 (hybrid) without systemd as PID 1, so each container gets cgroups of
# its own (name=systemd and unified hierarchies) that `stop` removes; no bus, so no machinectl:
# `--register=no --keep-unit`. State lives in /run/udprelayd-nspawn/NAME (console.log has the
# container's console output, useful when boot fails).
set -euo pipefail

cache=${NSPAWN_CACHE:-/var/cache/udprelayd-nspawn}
state_root=/run/udprelayd-nspawn
packages="systemd,systemd-sysv,dbus,procps,socat${NSPAWN_EXTRA_PACKAGES:+,$NSPAWN_EXTRA_PACKAGES}"
cgroup_dirs=(/sys/fs/cgroup/systemd /sys/fs/cgroup/unified)

die() { echo "nspawn.sh: $*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (systemd-nspawn, nsenter and cgroups need it)"
  for tool in systemd-nspawn debootstrap nsenter flock; do
    command -v "$tool" >/dev/null || die "'$tool' not found: run scripts/install-deps.sh test"
  done
}

check_name() {
  [[ ${1:-} =~ ^[A-Za-z0-9_-]+$ ]] || die "bad container name '${1:-}' (letters, digits, '-', '_')"
}

mirror() {
  if [ -n "${NSPAWN_MIRROR:-}" ]; then echo "$NSPAWN_MIRROR"; return; fi
  local m
  m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
      grep -oE 'https?://[^ ]*/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)
  echo "${m:-http://deb.debian.org/debian}"
}

cmd_rootfs() {
  need_root
  local key dir
  key=$(echo "$packages" | sha256sum | cut -c1-12)
  dir="$cache/bookworm-$key"
  mkdir -p "$cache"
  if [ ! -e "$dir/.complete" ]; then
    exec 9>"$cache/.lock"
    flock 9
    if [ ! -e "$dir/.complete" ]; then
      local tmp="$dir.tmp.$$"
      rm -rf "$dir" "$tmp"
      echo "nspawn.sh: building bookworm rootfs ($packages) in $dir ..." >&2
      if ! debootstrap --variant=minbase --include="$packages" bookworm "$tmp" "$(mirror)" >"$cache/debootstrap.log" 2>&1; then
        tail -n 20 "$cache/debootstrap.log" >&2
        rm -rf "$tmp"
        die "debootstrap failed (log: $cache/debootstrap.log)"
      fi
      # The container's hostname comes from its machine name, not from the build host.
      rm -f "$tmp/etc/hostname"
      # No getty on a console nobody reads; quieter and faster boots.
      chroot "$tmp" systemctl mask console-getty.service getty@tty1.service >/dev/null 2>&1 || true
      chroot "$tmp" apt-get clean >/dev/null 2>&1 || true
      touch "$tmp/.complete"
      mv "$tmp" "$dir"
    fi
    exec 9>&-
  fi
  echo "$dir"
}

nspawn_pid() { cat "$state_root/$1/nspawn.pid" 2>/dev/null || true; }

# True while PID exists and is not a zombie (kill -0 succeeds on zombies).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

find_leader() {
  local pid=$1 child
  for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
    if [ "$(cat /proc/"$child"/comm 2>/dev/null)" = systemd ]; then echo "$child"; return 0; fi
    find_leader "$child" && return 0
  done
  return 1
}

cmd_leader() {
  check_name "${1:-}"
  local leader
  leader=$(cat "$state_root/$1/leader.pid" 2>/dev/null) || die "container '$1' is not running"
  alive "$leader" || die "container '$1' is not running (PID 1 $leader gone)"
  echo "$leader"
}

cmd_boot() {
  need_root
  local name=${1:-}
  check_name "$name"
  shift
  local dir rootfs pid leader="" i
  dir="$state_root/$name"
  if [ -e "$dir/nspawn.pid" ] && alive "$(nspawn_pid "$name")"; then
    die "container '$name' is already running (scripts/nspawn.sh stop $name)"
  fi
  rootfs=$(cmd_rootfs)
  rm -rf "$dir"
  mkdir -p "$dir"
  for c in "${cgroup_dirs[@]}"; do
    [ -d "$c" ] && mkdir -p "$c/udprelayd-nspawn-$name"
  done
  (
    # Move this subshell (and so systemd-nspawn, which it becomes) into cgroups of its own.
    for c in "${cgroup_dirs[@]}"; do
      [ -d "$c/udprelayd-nspawn-$name" ] && echo "$BASHPID" >"$c/udprelayd-nspawn-$name/cgroup.procs"
    done
    exec setsid systemd-nspawn -q -D "$rootfs" -M "$name" --register=no --keep-unit --boot \
      --volatile=overlay --private-network --console=read-only "$@"
  ) </dev/null >"$dir/console.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/nspawn.pid"
  for i in $(seq 1 300); do
    alive "$pid" || { cat "$dir/console.log" >&2; die "systemd-nspawn exited during boot"; }
    leader=$(find_leader "$pid" || true)
    [ -n "$leader" ] && break
    sleep 0.1
  done
  [ -n "$leader" ] || { cmd_stop "$name"; die "no systemd in container '$name' after 30 s"; }
  echo "$leader" >"$dir/leader.pid"
  # Wait for start-up to finish (running or degraded both mean the boot transaction is done).
  local st
  for i in $(seq 1 600); do
    st=$(nsenter -t "$leader" -a systemctl is-system-running 2>/dev/null || true)
    case "$st" in running|degraded) break ;; esac
    alive "$pid" || break
    sleep 0.1
  done
  case "$st" in
    running|degraded) ;;
    *) cat "$dir/console.log" >&2; cmd_stop "$name"; die "container '$name' did not finish booting (state '$st')" ;;
  esac
  echo "$leader"
}

cmd_exec() {
  local name=${1:-}
  check_name "$name"
  shift
  [ $# -gt 0 ] || die "usage: nspawn.sh exec NAME COMMAND [ARG...]"
  local leader
  leader=$(cmd_leader "$name")
  exec nsenter -t "$leader" -a "$@"
}

cmd_put() {
  local name=${1:-} src=${2:-} dst=${3:-} mode=${4:-0644}
  check_name "$name"
  [ -f "$src" ] && [ -n "$dst" ] || die "usage: nspawn.sh put NAME HOST-FILE CONTAINER-PATH [MODE]"
  local leader
  leader=$(cmd_leader "$name")
  nsenter -t "$leader" -a sh -c 'mkdir -p "$(dirname "$1")" && cat >"$1" && chmod "$2" "$1"' put "$dst" "$mode" <"$src"
}

cmd_stop() {
  local name=${1:-}
  check_name "$name"
  local dir="$state_root/$name" pid i
  pid=$(nspawn_pid "$name")
  if [ -n "$pid" ] && alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      echo "nspawn.sh: container '$name' did not power off in 10 s, killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      for i in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    fi
  fi
  for c in "${cgroup_dirs[@]}"; do
    local root="$c/udprelayd-nspawn-$name"
    [ -d "$root" ] || continue
    # Depth first: a cgroup can only be removed once its children are gone.
    find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [ -d "$root" ] && echo "nspawn.sh: warning: cgroup $root still exists (processes left in it?)" >&2
  done
  rm -rf "$dir"
}

sub=${1:-}
shift || true
case "$sub" in
  rootfs) cmd_rootfs ;;
  boot) cmd_boot "$@" ;;
  exec) cmd_exec "$@" ;;
  put) cmd_put "$@" ;;
  leader) cmd_leader "$@" ;;
  stop) cmd_stop "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
