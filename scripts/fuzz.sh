#!/usr/bin/env bash
# Builds each libFuzzer target with address sanitizer and runs it for a bounded time.
# Usage: scripts/fuzz.sh [seconds-per-target] [target...]   (default 60 and every target; the
# issue's long runs used 600). Targets: config, request-target, status-http, proxy-protocol.
# Crashes are written to .build-fuzz/crashes/<target>/; turn each into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
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

# The PROXY v2 header parser alone: it depends on Glibc only.
build_proxy_protocol() {
  swiftc -parse-as-library -sanitize=fuzzer,address -O -g \
    -module-name UDPRelayDatapath \
    Sources/UDPRelayDatapath/ProxyHeaderParser.swift Fuzz/FuzzProxyProtocol.swift \
    -o "$out/fuzz-proxy-protocol"
}

# The HTTP request path through the status server's own pipeline needs SwiftNIO: SwiftPM builds
# the dependencies with the same sanitizers in their own scratch folder, and swiftc compiles the
# status sources with the harness as one module against them.
build_status_http() {
  local spm="$out/spm"
  swift build --sanitize=fuzzer --sanitize=address --scratch-path "$spm" --target UDPRelayConfig >&2
  swift build --sanitize=fuzzer --sanitize=address --scratch-path "$spm" --target NIOEmbedded >&2
  swift build --sanitize=fuzzer --sanitize=address --scratch-path "$spm" --target NIOHTTP1 >&2
  local bin
  bin=$(swift build --sanitize=fuzzer --sanitize=address --scratch-path "$spm" --show-bin-path)
  local flags=() objects=()
  for map in "$bin"/*.build/module.modulemap "$spm"/checkouts/*/Sources/*/include/module.modulemap; do
    [ -f "$map" ] && flags+=(-Xcc "-fmodule-map-file=$map")
  done
  for inc in "$spm"/checkouts/*/Sources/*/include; do flags+=(-Xcc -I -Xcc "$inc"); done
  for module in NIOCore NIOPosix NIOHTTP1 NIOEmbedded NIOConcurrencyHelpers _NIODataStructures _NIOBase64 \
                CNIOLinux CNIOPosix CNIOLLHTTP CNIOAtomics CNIODarwin CNIOWindows CNIOWASI CNIOFreeBSD CNIOOpenBSD \
                Logging UDPRelayConfig Atomics _AtomicsShims DequeModule InternalCollectionsUtilities ContainersPreview; do
    [ -d "$bin/$module.build" ] || continue
    while IFS= read -r -d '' o; do objects+=("$o"); done < <(find "$bin/$module.build" -name '*.o' -print0)
  done
  swiftc -parse-as-library -sanitize=fuzzer,address -O -g -swift-version 6 \
    -module-name UDPRelayStatus -I "$bin/Modules" "${flags[@]}" \
    Sources/UDPRelayStatus/*.swift Fuzz/FuzzStatusHTTP.swift "${objects[@]}" \
    -o "$out/fuzz-status-http"
}

run() {
  local name=$1 corpus=$2
  mkdir -p "$out/corpus/$name" "$out/crashes/$name"
  cp -n "$corpus"/* "$out/corpus/$name/" 2>/dev/null || true
  echo "fuzzing $name for ${seconds}s" >&2
  "$out/fuzz-$name" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=4096 \
    -artifact_prefix="$out/crashes/$name/" -print_final_stats=1 "$out/corpus/$name" 2>&1 | tail -n 25
}

wanted() { [ ${#targets[@]} -eq 0 ] || [[ " ${targets[*]} " == *" $1 "* ]]; }

if wanted config; then build_config; run config Fuzz/corpus/config; fi
if wanted request-target; then build_request_target; run request-target Fuzz/corpus/request-target; fi
if wanted status-http; then build_status_http; run status-http Fuzz/corpus/status-http; fi
if wanted proxy-protocol; then build_proxy_protocol; run proxy-protocol Fuzz/corpus/proxy-protocol; fi
