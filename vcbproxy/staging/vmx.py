"""The exported ``.vmx``: disk ``fileName`` lines pointed at the staged disks, everything else untouched.

Only the lines that must change are rewritten; comments, order, spacing, line endings and
the ``.encoding`` line stay byte for byte, so a restore or a diff sees the VM's own config.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

# key = "value" — vmx keys are case-insensitive, values are quoted with |XX hex escapes.
_ENTRY = re.compile(
    r'^(?P<lead>\s*)(?P<key>[^=#\s]+)(?P<mid>\s*=\s*)(?P<value>"[^"]*"|[^\r\n]*?)(?P<tail>\s*)$'
)
_ESCAPE = re.compile(r"\|([0-9A-Fa-f]{2})")

# State of the source VM that means nothing beside the export (and would point a restored
# VM at files it does not have): the suspend/snapshot memory file, the host's swap file.
DROPPED_KEYS = {"checkpoint.vmstate", "sched.swap.derivedname"}


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if "|" not in value:
        return value
    # |XX escapes stand for bytes ("|C3|BC" is a UTF-8 "ü"), so decode them as bytes.
    raw = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(value):
        raw += value[pos : match.start()].encode("utf-8", "surrogateescape")
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += value[pos:].encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "surrogateescape")


def _quote(value: str) -> str:
    escaped = "".join(f"|{ord(c):02X}" if c in '"|' or ord(c) < 0x20 else c for c in value)
    return f'"{escaped}"'


def parse_vmx(text: str) -> dict[str, str]:
    """{lower-cased key: unquoted value}; comments and blank lines skipped, the last duplicate wins."""
    entries: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENTRY.match(line)
        if match:
            entries[match.group("key").lower()] = _unquote(match.group("value"))
    return entries


def _lines(text: str):
    """``(body, line ending, entry match or None, lower-cased key or "")`` of each line, so a
    rewrite can keep every line it does not change byte for byte."""
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        match = _ENTRY.match(body) if not body.lstrip().startswith("#") else None
        yield body, line[len(body) :], match, match.group("key").lower() if match else ""


def rewrite_vmx(text: str, disk_files: dict[str, str]) -> str:
    """Point ``<device>.fileName`` at the staged disk for each device in ``disk_files`` ("scsi0:0" → name)."""
    wanted = {dev.lower() + ".filename": name for dev, name in disk_files.items()}
    seen: set[str] = set()
    out = []
    for body, ending, match, key in _lines(text):
        if key in DROPPED_KEYS:
            continue
        if key in wanted:
            seen.add(key)
            body = (
                match.group("lead")
                + match.group("key")
                + match.group("mid")
                + _quote(wanted[key])
                + match.group("tail")
            )
        out.append(body + ending)
    for key in sorted(set(wanted) - seen):
        log.warning(
            "the .vmx has no %s line; the exported disk %s is not referenced", key, wanted[key]
        )
    return "".join(out)


def set_vmx_values(text: str, values: dict[str, str]) -> str:
    """Set ``key = "value"`` lines (case-insensitive keys), appending the keys not present."""
    wanted = {k.lower(): (k, v) for k, v in values.items()}
    seen: set[str] = set()
    out = []
    newline = "\r\n" if "\r\n" in text else "\n"
    for body, ending, match, key in _lines(text):
        if key in wanted:
            if key in seen:
                continue  # a duplicate would win on reload
            seen.add(key)
            body = (
                match.group("lead")
                + match.group("key")
                + match.group("mid")
                + _quote(wanted[key][1])
            )
        out.append(body + ending)
    if out and not out[-1].endswith(("\n", "\r")):
        out[-1] += newline
    out += [
        f"{orig} = {_quote(value)}{newline}"
        for key, (orig, value) in wanted.items()
        if key not in seen
    ]
    return "".join(out)
