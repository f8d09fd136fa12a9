#!/usr/bin/env bash
# Sets udprelayd's version everywhere it is written down, in one step:
# Sources/udprelayd/Version.swift and a new top entry of packaging/debian/changelog.
# Usage: scripts/set-version.sh VERSION ["changelog line"] [ROOT]
#   ROOT defaults to this checkout (the container test uses it on a copy).
set -euo pipefail
version=${1:?usage: set-version.sh VERSION [message] [ROOT]}
message=${2:-"New upstream version $version."}
root=${3:-$(cd "$(dirname "$0")/.." && pwd)}
if ! [[ $version =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
  echo "error: '$version' is not a native Debian version (digits, letters, . + ~; no '-')" >&2
  exit 1
fi
swift_file="$root/Sources/udprelayd/Version.swift"
changelog="$root/packaging/debian/changelog"
sed -i "s/^\( *static let version = \)\"[^\"]*\"/\1\"$version\"/" "$swift_file"
maintainer=$(dpkg-parsechangelog -l "$changelog" -S Maintainer)
{
  printf 'udprelayd (%s) unstable; urgency=medium\n\n  * %s\n\n -- %s  %s\n\n' \
    "$version" "$message" "$maintainer" "$(LC_ALL=C date -R)"
  cat "$changelog"
} > "$changelog.new"
mv "$changelog.new" "$changelog"
"$root/scripts/check-version.sh" >/dev/null
echo "version set to $version"
