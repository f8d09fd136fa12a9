#!/usr/bin/env bash
# Fails when the version in Sources/udprelayd/Version.swift and the newest entry of
# packaging/debian/changelog differ, or when it is not a valid native Debian version.
# With a binary as argument, also checks that `BINARY --version` prints the same.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=$("$root/scripts/version.sh") || { echo "error: no version in Sources/udprelayd/Version.swift" >&2; exit 1; }
if ! [[ $version =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
  echo "error: version '$version' is not a native Debian version (digits, letters, . + ~; no '-')" >&2
  exit 1
fi
changelog=$(dpkg-parsechangelog -l "$root/packaging/debian/changelog" -S Version)
if [ "$changelog" != "$version" ]; then
  echo "error: Version.swift says $version but packaging/debian/changelog says $changelog;" \
       "change both with scripts/set-version.sh" >&2
  exit 1
fi
if [ $# -gt 0 ]; then
  printed=$("$1" --version)
  if [ "$printed" != "$version" ]; then
    echo "error: $1 --version prints '$printed', expected '$version'" >&2
    exit 1
  fi
fi
echo "version $version: Version.swift, debian/changelog${1:+ and $1 --version} agree"
