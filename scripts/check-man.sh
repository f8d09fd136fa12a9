#!/usr/bin/env bash
# Checks the generated man pages (run by `make test` and by the package build):
#   - udprelayd.ini(5) has, under each [section] of config/README.md, every key that the
#     reference documents there, and nothing is lost between the reference and the page;
#   - udprelayd(8) names every long option that `BINARY --help` lists (when BINARY is given);
#   - both pages render with `man --warnings` (groff) without a single warning, as lintian runs it.
# Usage: scripts/check-man.sh [BINARY]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$root/packaging/man/build-man.sh" "$out"

python3 - "$root/config/README.md" "$out/udprelayd.ini.5" <<'PY'
import re, sys
reference, page = open(sys.argv[1]).read(), open(sys.argv[2]).read()

def esc(s):
    return s.replace("\\", r"\e").replace("-", r"\-")

# Keys per section, read from the reference's tables: `## `[section]`` then rows "| `key` |".
expected, section = {}, None
for line in reference.splitlines():
    m = re.match(r"^##\s+`(\[[^\]]+\])`", line)
    if m:
        section = m.group(1); expected[section] = []; continue
    if line.startswith("## "):
        section = None; continue
    m = re.match(r"^\|\s*`([A-Za-z0-9_]+)`\s*\|", line)
    if section and m:
        expected[section].append(m.group(1))
if not any(expected.values()):
    sys.exit("check-man: found no key tables in the reference; has its format changed?")

# The page, split at its .SH headings.
sections, current = {}, None
for line in page.splitlines():
    if line.startswith(".SH "):
        current = line[4:].strip('"'); sections[current] = []; continue
    if current is not None:
        sections[current].append(line)
missing = []
for sec, keys in expected.items():
    body = sections.get(esc(sec))
    if body is None:
        missing.append(f"section {sec}"); continue
    tags = {body[i + 1] for i, l in enumerate(body[:-1]) if l == ".TP"}
    for k in keys:
        if rf"\fB{esc(k)}\fR" not in tags:
            missing.append(f"{sec} {k}")
if missing:
    sys.exit("check-man: udprelayd.ini(5) lacks what config/README.md documents: " + ", ".join(missing))
n = sum(len(v) for v in expected.values())
print(f"udprelayd.ini(5): all {n} keys of {len(expected)} sections documented in config/README.md")
PY

if [ $# -gt 0 ]; then
  options=$("$1" --help | grep -oE -- '--[a-z][a-z0-9-]+' | sort -u)
  for o in $options; do
    grep -qF -- "${o//-/\\-}" "$out/udprelayd.8" || { echo "check-man: udprelayd(8) does not document $o (from $1 --help)" >&2; exit 1; }
  done
  echo "udprelayd(8): documents every option of --help:" $options
fi

for page in "$out/udprelayd.8" "$out/udprelayd.ini.5"; do
  warnings=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null) || true
  if [ -n "$warnings" ]; then
    echo "check-man: $(basename "$page") renders with warnings:" >&2
    echo "$warnings" >&2
    exit 1
  fi
  lines=$(MANWIDTH=80 man -l "$page" 2>/dev/null | wc -l)
  [ "$lines" -gt 20 ] || { echo "check-man: $(basename "$page") renders to only $lines lines" >&2; exit 1; }
done
echo "man pages render without warnings"
