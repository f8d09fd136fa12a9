#!/usr/bin/env bash
# Prints udprelayd's version. The one place it is set is Sources/udprelayd/Version.swift
# (BuildInfo.version); scripts/set-version.sh changes it there and in the Debian changelog together,
# and scripts/check-version.sh (run by `make test` and by the package build) fails if they differ.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sed -n 's/^ *static let version = "\([^"]*\)".*/\1/p' "$root/Sources/udprelayd/Version.swift" | head -n 1 | grep .
