#!/usr/bin/env bash
# Fails when the build log given on stdin has a compiler warning in this project's own code
# (dependencies' warnings are theirs). Swift 6 mode, zero warnings.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if grep -E "^($root/)?(Sources|Tests|Benchmarks)/[^:]+:[0-9]+:[0-9]+: warning:" ; then
  echo "error: the build has warnings in project code (listed above)" >&2
  exit 1
fi
exit 0
