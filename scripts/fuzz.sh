#!/usr/bin/env bash
# Builds each libFuzzer target with address sanitizer and runs it for a bounded time.
# Usage: scripts/fuzz.sh [seconds-per-target]   (default 60; the issue's long run used 600)
# Crashes are written to .build-fuzz/crashes/<target>/; turn each into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
out=.build-fuzz
mkdir -p "$out"

build_config() {
  swiftc -parse-as-library -sanitize=fuzzer,address -O -g \
    -module-name UDPRelayConfig \
    Sources/UDPRelayConfig/*.swift Fuzz/FuzzConfig.swift \
    -o "$out/fuzz-config"
}

build_request_target() {
  swiftc -parse-as-library -sanitize=fuzzer,address -O -g \
    -module-name UDPRelayStatus \
    Sources/UDPRelayStatus/RequestTarget.swift Sources/UDPRelayStatus/Formatting.swift Fuzz/FuzzRequestTarget.swift \
    -o "$out/fuzz-request-target"
}

run() {
  local name=$1 corpus=$2
  mkdir -p "$out/corpus/$name" "$out/crashes/$name"
  cp -n "$corpus"/* "$out/corpus/$name/" 2>/dev/null || true
  echo "fuzzing $name for ${seconds}s" >&2
  "$out/fuzz-$name" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=4096 \
    -artifact_prefix="$out/crashes/$name/" -print_final_stats=1 "$out/corpus/$name" 2>&1 | tail -n 25
}

build_config
build_request_target
run config Fuzz/corpus/config
run request-target Fuzz/corpus/request-target
