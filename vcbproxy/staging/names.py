"""Server-provided names (VM display names, datastore file names) made into safe path components.

vSphere allows almost anything in a display name, including ``/`` (shown as ``%2f`` in
inventory paths), ``..`` and control characters. A name must never climb out of the
staging directory nor collide with ``.``/``..``, and the same input must always give
the same output, so reruns land in the same place.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path

from vcbproxy.errors import StagingError

MAX_BYTES = 200  # well under NAME_MAX (255), leaving room for ".partial" and "-2"
FULLVM_SUFFIX = "-fullVM"  # vcbSnapAll's directory naming
_VSPHERE_ESCAPES = re.compile(r"%(2[fF]|5[cC]|25)")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,8}$")


def _decode_vsphere_escapes(name: str) -> str:
    # vSphere escapes only '/', '\' and '%' in names; a general unquote would also turn
    # an innocent "%41" typed by an admin into "A", which the server never meant.
    return _VSPHERE_ESCAPES.sub(lambda m: chr(int(m.group(1), 16)), name)


def _clean_char(ch: str) -> str:
    if ch in "/\\":
        return "_"
    cat = unicodedata.category(ch)
    if cat == "Cc" or cat == "Cs":  # control characters (NUL, newline, ESC) and lone surrogates
        return "_"
    return ch


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", "ignore")


def _fit(name: str, original: str, max_bytes: int) -> str:
    """Shorten to ``max_bytes`` keeping the extension; a hash of the original keeps distinct long names distinct."""
    if len(name.encode("utf-8")) <= max_bytes:
        return name
    match = _EXTENSION.search(name)
    ext = match.group(0) if match else ""
    tag = "~" + hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    stem = _truncate_utf8(name[: len(name) - len(ext)], max_bytes - len(tag) - len(ext))
    return stem + tag + ext


def _safe(name: str, max_bytes: int) -> str:
    original = name
    name = unicodedata.normalize("NFC", _decode_vsphere_escapes(name))
    name = "".join(_clean_char(ch) for ch in name).strip()
    if not name or set(name) == {"."}:
        # "", "." and ".." (and "...") would name the directory itself or its parent.
        name = "_" * max(len(name), 1)
    if name.startswith("-"):
        # A leading dash turns a file name into an option for the scripts backup products run on it.
        name = "_" + name[1:]
    return _fit(name, original, max_bytes)


def safe_component(name: str) -> str:
    """One safe, deterministic path component for a server-provided name (≤ 200 bytes of UTF-8)."""
    return _safe(name, MAX_BYTES)


def export_dir_name(vm_name: str) -> str:
    """``<safe name>-fullVM``, the directory vcbSnapAll gave each VM."""
    return _safe(vm_name, MAX_BYTES - len(FULLVM_SUFFIX)) + FULLVM_SUFFIX


def unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3`` … (before a short extension) if already in ``taken``.

    ``taken`` is not modified: the caller adds the result when it uses it.
    """
    if name not in taken:
        return name
    match = _EXTENSION.search(name)
    ext = match.group(0) if match and match.start() > 0 else ""
    stem = name[: len(name) - len(ext)]
    n = 2
    while True:
        suffix = f"-{n}{ext}"
        candidate = _truncate_utf8(stem, MAX_BYTES - len(suffix.encode("utf-8"))) + suffix
        if candidate not in taken:
            return candidate
        n += 1


def check_component(name: str) -> str:
    """Refuse (rather than silently rename) a name our own code builds that is not one safe component."""
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or len(name.encode("utf-8", "surrogateescape")) > 255
    ):
        raise StagingError(f"unsafe file name {name!r} for the staging directory")
    return name


def inside(root: Path, candidate: str | Path) -> Path:
    """``candidate`` (relative to ``root`` unless absolute) resolved, symlinks included; refuse escapes."""
    base = Path(os.path.realpath(root))
    target = Path(candidate)
    if not target.is_absolute():
        target = Path(root) / target
    resolved = Path(os.path.realpath(target))
    if resolved != base and base not in resolved.parents:
        raise StagingError(
            f"{candidate} resolves to {resolved}, outside the staging directory {base}; refusing"
        )
    return resolved
