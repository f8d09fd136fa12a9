#!/usr/bin/env bash
# Installs the Debian packages udprelayd needs to build, run and test, if any are missing.
# Idempotent and quick when everything is present.
# Usage: scripts/install-deps.sh [build|run|test|deb] [--list]   (--list prints the packages and
# installs nothing)
set -euo pipefail
what=${1:-build}
list=${2:-}

packages=(libsystemd-dev pkg-config)
if [ "$what" = run ]; then
  # `make run`: the client the README's quick start sends its first datagrams with.
  packages+=(socat)
fi
if [ "$what" = test ]; then
  # systemd (systemd-analyze), systemd-container (systemd-nspawn), debootstrap: the unit checks
  # and the end-to-end test under a real systemd (scripts/nspawn.sh).
  packages+=(socat curl procps iproute2 python3 systemd systemd-container debootstrap)
  # gcc: the benchmark's C pieces, compiled and smoke-checked by make test.
  packages+=(gcc)
  # The status endpoint's end-to-end test: the clients our users script with, a real
  # Prometheus text parser, a JSON Schema validator and a headless browser for the page.
  packages+=(python3-requests python3-prometheus-client python3-jsonschema chromium)
  # proxy_protocol = v2 checked against a PROXY v2 receiver nobody here wrote: dnsdist
  # (setProxyProtocolACL) answers DNS queries according to the client the header names.
  packages+=(dnsdist)
  # scripts/check-fleet-examples.sh: pip, for the `kubernetes` client from PyPI (below).
  packages+=(python3-pip)
fi
# The Debian package (`make deb`, and its tests in `make test`): dpkg-dev and debhelper build it,
# lintian checks it, python3/groff-base/man-db generate and check the man pages.
# (scripts/build-deb.sh also installs debian/control's Build-Depends with apt-get satisfy.)
if [ "$what" = test ] || [ "$what" = deb ]; then
  packages+=(build-essential dpkg-dev debhelper lintian python3 groff-base man-db)
fi

if [ "$list" = --list ]; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
# Wait for a concurrent apt/dpkg run rather than fail on its lock.
lock=(-o DPkg::Lock::Timeout=600)
$sudo apt-get "${lock[@]}" update -qq
$sudo apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# PyPI packages of the test set, pinned, into .build/python (never into the system Python,
# whose Debian modules they would shadow); scripts/check-fleet-examples.sh puts it on
# PYTHONPATH. Nothing is fetched when the pinned version is there.
if [ "$what" = test ]; then
  target="$(cd "$(dirname "$0")/.." && pwd)/.build/python"
  kubernetes=37.0.2
  if ! PYTHONPATH="$target" /usr/bin/python3 -c "import sys, kubernetes; sys.exit(kubernetes.__version__ != '$kubernetes')" 2>/dev/null; then
    echo "installing from PyPI into $target: kubernetes==$kubernetes" >&2
    /usr/bin/python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
      --upgrade --target "$target" "kubernetes==$kubernetes"
  fi
fi
