#!/usr/bin/env python3
"""Turns the project's Markdown documentation into man pages, so the pages never drift from it.

    md2man.py --name udprelayd.ini --section 5 --summary "configuration file of udprelayd" \
              --version 0.1.0 --date 2026-11-25 config/README.md > udprelayd.ini.5

Understands the subset of Markdown the docs use: one `#` title (replaced by the NAME section),
`##`/`###` headings, paragraphs, `-` lists (with indented continuation lines), fenced code blocks
and `|` tables; inline `code`, **bold**, *italic* and [links](target). Tables become tagged
paragraphs (no tbl), one per row: the first cell is the tag, a `meaning`/`notes` column the text,
every other column a `Header: value` line, so a key table reads like systemd's man pages.

`--see-also` adds a SEE ALSO section; `--prepend FILE` inserts Markdown (for example a SYNOPSIS)
before the document's first heading. Standard library only.
"""

import argparse
import re
import sys

# Characters that would otherwise go through preconv or warn; the rest of non-ASCII is left to it.
SPECIAL = {
    "\u2014": r"\(em",
    "\u2013": r"\(en",
    "\u2192": r"\(->",
    "\u2190": r"\(<-",
    "\u00b5": r"\(mc",
    "\u2264": r"\(<=",
    "\u2265": r"\(>=",
    "\u00d7": r"\(mu",
    "\u2018": r"\(oq",
    "\u2019": r"\(cq",
    "\u201c": r"\(lq",
    "\u201d": r"\(rq",
    "\u2026": r"\&...",
}

# Links to these files become man page references.
LINK_TARGETS = {
    "config/README.md": "udprelayd.ini(5)",
    "README.md": "udprelayd(8)",
}

PROSE_COLUMNS = {"meaning", "notes", "description", "answer"}


def escape(text, code=False):
    """Escapes text for roff. In code, '-' becomes a minus sign (options must copy-paste)."""
    text = text.replace("\\", r"\e")
    if code:
        text = text.replace("-", r"\-")
    out = []
    for ch in text:
        out.append(SPECIAL.get(ch, ch))
    return "".join(out)


INLINE = re.compile(
    r"`(?P<code>[^`]+)`"
    r"|\*\*(?P<bold>[^*]+)\*\*"
    r"|(?<![\w*])\*(?P<ital>[^*\s][^*]*)\*(?![\w*])"
    r"|\[(?P<ltext>[^\]]+)\]\((?P<lurl>[^)]+)\)"
)


def inline(text):
    """Markdown inline markup -> roff font escapes."""
    out = []
    pos = 0
    for m in INLINE.finditer(text):
        out.append(escape(text[pos : m.start()]))
        if m.group("code") is not None:
            out.append(r"\fB" + escape(m.group("code"), code=True) + r"\fR")
        elif m.group("bold") is not None:
            out.append(r"\fB" + escape(m.group("bold")) + r"\fR")
        elif m.group("ital") is not None:
            out.append(r"\fI" + escape(m.group("ital")) + r"\fR")
        else:
            label, url = m.group("ltext"), m.group("lurl")
            ref = LINK_TARGETS.get(url.lstrip("./").split("#")[0])
            rendered = inline(label)
            if ref and ref.split("(")[0] not in label:
                rendered += " (see " + r"\fB" + escape(ref) + r"\fR)"
            elif not ref and re.match(r"https?://", url):
                rendered += " <" + escape(url) + ">"
            out.append(rendered)
        pos = m.end()
    out.append(escape(text[pos:]))
    return "".join(out)


def text_line(s):
    """A line of running text: a leading '.' or ''' would be read as a request."""
    if s.startswith((".", "'")):
        return r"\&" + s
    return s


def split_row(line):
    """Splits a table row on unescaped '|' ('\\|' inside a cell is a literal bar)."""
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    cells = re.split(r"(?<!\\)\|", line)
    return [c.strip().replace("\\|", "|") for c in cells]


def heading_text(raw):
    """A heading: code spans keep their case, plain words are upper-cased (man convention)."""
    parts = re.split(r"(`[^`]+`)", raw)
    out = []
    for p in parts:
        if p.startswith("`") and p.endswith("`"):
            out.append(p[1:-1])
        else:
            out.append(p.upper())
    return escape("".join(out).strip())


class Converter:
    def __init__(self):
        self.out = []

    def emit(self, line):
        self.out.append(line)

    def paragraph(self, lines):
        if not lines:
            return
        self.emit(".PP")
        for l in lines:
            self.emit(text_line(inline(l.strip())))

    def bullet(self, lines):
        self.emit(r".IP \(bu 2")
        for l in lines:
            self.emit(text_line(inline(l.strip())))

    def code_block(self, lines):
        self.emit(".PP")
        self.emit(".RS 4")
        self.emit(".nf")
        for l in lines:
            self.emit(text_line(escape(l.rstrip(), code=True)))
        self.emit(".fi")
        self.emit(".RE")

    def table(self, header, rows):
        header_l = [h.lower() for h in header]
        for row in rows:
            row = row + [""] * (len(header) - len(row))
            self.emit(".TP")
            self.emit(text_line(inline(row[0]) if "`" in row[0] else r"\fB" + inline(row[0]) + r"\fR"))
            body_started = False
            for h, cell in zip(header_l[1:], row[1:]):
                if h in PROSE_COLUMNS and cell:
                    if body_started:
                        self.emit(".br")
                    self.emit(text_line(inline(cell)))
                    body_started = True
            for h, original, cell in zip(header_l[1:], header[1:], row[1:]):
                if h in PROSE_COLUMNS or not cell:
                    continue
                if body_started:
                    self.emit(".br")
                self.emit(text_line(r"\fI" + escape(original.capitalize()) + r":\fR " + inline(cell)))
                body_started = True

    def convert(self, md, skip_title=True):
        lines = md.splitlines()
        i = 0
        para = []

        def flush():
            nonlocal para
            self.paragraph(para)
            para = []

        while i < len(lines):
            line = lines[i]
            stripped = line.strip()
            if stripped.startswith("```"):
                flush()
                block = []
                i += 1
                while i < len(lines) and not lines[i].strip().startswith("```"):
                    block.append(lines[i])
                    i += 1
                self.code_block(block)
                i += 1
                continue
            m = re.match(r"^(#{1,6})\s+(.*)$", line)
            if m:
                flush()
                level = len(m.group(1))
                if level == 1:
                    if not skip_title:
                        self.emit(".SH " + '"' + heading_text(m.group(2)) + '"')
                elif level == 2:
                    self.emit(".SH " + '"' + heading_text(m.group(2)) + '"')
                else:
                    self.emit(".SS " + '"' + escape(m.group(2).replace("`", "")) + '"')
                i += 1
                continue
            if stripped.startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|[\s:|-]+\|\s*$", lines[i + 1]):
                flush()
                header = split_row(line)
                i += 2
                rows = []
                while i < len(lines) and lines[i].strip().startswith("|"):
                    rows.append(split_row(lines[i]))
                    i += 1
                self.table(header, rows)
                continue
            m = re.match(r"^(\s*)[-*]\s+(.*)$", line)
            if m and len(m.group(1)) < 2:
                flush()
                item = [m.group(2)]
                i += 1
                while i < len(lines) and lines[i].startswith("  ") and lines[i].strip() and not re.match(r"^\s*[-*]\s+", lines[i]):
                    item.append(lines[i])
                    i += 1
                self.bullet(item)
                continue
            if not stripped:
                flush()
                i += 1
                continue
            if skip_title and not any(l.startswith(".SH") for l in self.out):
                # Text between the title and the first heading is the description.
                self.emit(".SH DESCRIPTION")
            para.append(line)
            i += 1
        flush()
        return self.out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--section", required=True)
    ap.add_argument("--summary", required=True, help="the one line after 'name \\-' in NAME")
    ap.add_argument("--version", required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--manual", default="udprelayd manual")
    ap.add_argument("--prepend", action="append", default=[], help="Markdown file inserted first")
    ap.add_argument("--see-also", default="")
    ap.add_argument("input")
    args = ap.parse_args()

    out = [
        '.\\" Generated by packaging/man/md2man.py from %s; do not edit.' % args.input,
        '.TH "%s" "%s" "%s" "udprelayd %s" "%s"'
        % (args.name.upper(), args.section, args.date, args.version, args.manual),
        ".nh",
        ".ad l",
        ".SH NAME",
        "%s \\- %s" % (escape(args.name, code=True), escape(args.summary)),
    ]
    for extra in args.prepend:
        with open(extra, encoding="utf-8") as f:
            out += Converter().convert(f.read(), skip_title=False)
    with open(args.input, encoding="utf-8") as f:
        out += Converter().convert(f.read())
    if args.see_also:
        out += [".SH \"SEE ALSO\"", text_line(inline(args.see_also))]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
