#!/usr/bin/env bash
# Installs the Debian packages the benchmark compares against or needs to run, if missing:
# nginx with its stream module (UDP proxy), socat, gcc and make (load client, C reference),
# util-linux (taskset). Idempotent and quick when everything is present.
# Packages are installed without starting their services (no stray nginx on port 80).
set -euo pipefail

packages=(nginx libnginx-mod-stream socat gcc make util-linux procps python3 linux-perf)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
# Keep package scripts from starting services, unless a policy is already in place.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  trap '$sudo rm -f "$policy"' EXIT
fi
# Wait for a concurrent apt/dpkg run rather than fail on its lock.
lock=(-o DPkg::Lock::Timeout=600)
$sudo apt-get "${lock[@]}" update -qq
$sudo apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
