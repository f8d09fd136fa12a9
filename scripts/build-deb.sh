#!/usr/bin/env bash
# `make deb`: builds udprelayd_<version>_<arch>.deb (amd64 here) at the top of the checkout,
# then runs lintian.
# Installs the package's Build-Depends through apt first (the Swift toolchain comes from PATH).
# Works on a copy of the tracked files in .build-deb/src with packaging/debian as debian/, and
# keeps SwiftPM's build folder in .build-deb/swiftpm so a second build is incremental.
# Environment: SWIFT (default: swift on PATH), LINTIAN=0 to skip lintian,
#              SRC=DIR to package another checkout (the container test builds a bumped copy),
#              OUT=DIR where the .deb goes (default: the checkout's top).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=${SRC:-$root}
out=${OUT:-$src}
work="$root/.build-deb"
swift=${SWIFT:-$(command -v swift)} || { echo "error: swift is not on PATH (set SWIFT=)" >&2; exit 1; }

"$root/scripts/install-deps.sh" deb
# Build-Depends, exactly as debian/control states them; `apt-get satisfy` resolves
# debhelper-compat and build profiles the way a Debian build daemon would.
if ! (cd "$src/packaging" && dpkg-checkbuilddeps debian/control >/dev/null 2>&1); then
  deps=$(sed -n '/^Build-Depends:/,/^[A-Z]/{/^#/d;s/^Build-Depends://;/^[A-Z]/d;p}' "$src/packaging/debian/control" | tr -d '\n')
  echo "installing Build-Depends: $deps" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  apt=($sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
  "${apt[@]}" satisfy -y -qq --no-install-recommends "$deps" >/dev/null \
    || { "${apt[@]}" update -qq && "${apt[@]}" satisfy -y -qq --no-install-recommends "$deps" >/dev/null; }
fi
"$src/scripts/check-version.sh" >/dev/null
version=$("$src/scripts/version.sh")
arch=$(dpkg --print-architecture)

# A clean copy of the tracked (and new, not ignored) files, with the packaging as debian/.
# Always the same folder (and tar keeps mtimes), so SwiftPM rebuilds only what changed.
stage="$work/src/udprelayd"
rm -rf "$work/src"
mkdir -p "$stage"
if [ "$(git -C "$src" rev-parse --show-toplevel 2>/dev/null)" = "$src" ]; then
  (cd "$src" && git ls-files -z -co --exclude-standard | xargs -0 -I{} sh -c '[ -e "$1" ] && printf "%s\0" "$1"' _ {} \
    | tar --null -T - -cf -) | tar -C "$stage" -xf -
else  # not a git checkout (an unpacked tarball, the test's bumped copy): all but build output
  tar -C "$src" --exclude='./.build*' --exclude='./*.deb' --exclude=./.git -cf - . | tar -C "$stage" -xf -
fi
cp -a "$src/packaging/debian" "$stage/debian"

echo "building udprelayd $version (dpkg-buildpackage, Swift release build with --static-swift-stdlib)" >&2
(cd "$stage" && SWIFT="$swift" SWIFT_SCRATCH="$work/swiftpm" \
  dpkg-buildpackage -b -us -uc --no-sign > "$work/build.log" 2>&1) \
  || { tail -n 60 "$work/build.log" >&2; echo "error: package build failed; full log: $work/build.log" >&2; exit 1; }
deb="$work/src/udprelayd_${version}_${arch}.deb"
[ -f "$deb" ] || { echo "error: $deb was not built" >&2; exit 1; }
mkdir -p "$out"
cp "$deb" "$out/"

if [ "${LINTIAN:-1}" != 0 ]; then
  # Errors and warnings fail the build; overrides (with reasons) are in debian/udprelayd.lintian-overrides.
  lintian --fail-on error,warning --info --display-experimental --tag-display-limit 0 "$deb" \
    || { echo "error: lintian found problems (above)" >&2; exit 1; }
  echo "lintian: clean (no errors, no warnings)" >&2
fi
echo "$out/udprelayd_${version}_${arch}.deb"
