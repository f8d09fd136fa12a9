#!/usr/bin/env bash
# Generates udprelayd.8 and udprelayd.ini.5 into OUTDIR from the Markdown they document:
# packaging/man/udprelayd.8.md and config/README.md (the configuration reference), so the pages
# never drift from it. Version and date come from the version source and the Debian changelog,
# which keeps the output reproducible. Usage: packaging/man/build-man.sh OUTDIR
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: build-man.sh OUTDIR}
mkdir -p "$out"
version=$("$root/scripts/version.sh")
date=$(date -u -d "@$(dpkg-parsechangelog -l "$root/packaging/debian/changelog" -S Timestamp)" +%Y-%m-%d)
gen=(python3 "$root/packaging/man/md2man.py" --version "$version" --date "$date")

"${gen[@]}" --name udprelayd --section 8 --summary "UDP echo and relay daemon" \
  --see-also '`udprelayd.ini(5)`, `systemctl(1)`, `journalctl(1)`, `systemd.service(5)`, `systemd.socket(5)`, `curl(1)`' \
  "$root/packaging/man/udprelayd.8.md" > "$out/udprelayd.8"

"${gen[@]}" --name udprelayd.ini --section 5 --summary "configuration file of the udprelayd daemon" \
  --see-also '`udprelayd(8)`; the annotated example `/usr/share/doc/udprelayd/examples/udprelayd.ini`' \
  "$root/config/README.md" > "$out/udprelayd.ini.5"
