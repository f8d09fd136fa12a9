#!/usr/bin/env bash
# The code keeps the one style of .swift-format (swift-format, shipped with the Swift toolchain).
# Part of `make test` and `make check`; `make format` applies it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
formatter=$(command -v swift-format || true)
if [ -z "$formatter" ]; then
  echo "check-format: FAILED: swift-format not found (it ships with the Swift toolchain)" >&2
  exit 1
fi
if ! "$formatter" lint --strict --recursive --configuration .swift-format Sources Tests Package.swift; then
  echo "check-format: FAILED: run 'make format' and commit the result" >&2
  exit 1
fi
echo "check-format: Sources, Tests and Package.swift follow .swift-format"
