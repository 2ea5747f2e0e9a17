"""``MANIFEST.sha256``: one ``<sha256>  <relative path>`` line per file, ``sha256sum -c`` compatible.

Hashing skips the holes of sparse files (SEEK_DATA/SEEK_HOLE) and hashes them as zeros
without reading them: a mostly empty flat extent hashes at CPU speed, not disk speed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

from vcbproxy.errors import StagingError, VerifyError
from vcbproxy.staging.atomic import PARTIAL_SUFFIX, write_atomic
from vcbproxy.staging.exportdir import INCOMPLETE_MARKER
from vcbproxy.staging.names import inside
from vcbproxy.vmdk.io import data_ranges

MANIFEST = "MANIFEST.sha256"
LOCK_DIR = ".locks"
_ZEROS = bytes(1 << 20)
_LINE = re.compile(r"^(\\?)([0-9a-fA-F]{64}) [ *](.+)$")


def hash_zeros(hasher, length: int) -> None:
    """Feed ``length`` zero bytes to ``hasher`` without allocating them (holes, zero runs)."""
    view = memoryview(_ZEROS)
    while length > 0:
        n = min(length, len(_ZEROS))
        hasher.update(view[:n])
        length -= n


def _hash_range(f, hasher, buf: bytearray, start: int, end: int) -> None:
    f.seek(start)
    view = memoryview(buf)
    remaining = end - start
    while remaining > 0:
        n = f.readinto(view[: min(len(buf), remaining)])
        if not n:
            break  # the file shrank while we read; the hash simply will not match
        hasher.update(view[:n])
        remaining -= n


def sha256_file(path, *, bufsize: int = 4 << 20) -> str:
    """SHA-256 hex of a file's content, holes read as zeros without touching the disk."""
    hasher = hashlib.sha256()
    buf = bytearray(bufsize)
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        for start, length in data_ranges(f.fileno(), 0, size):
            hash_zeros(hasher, start - pos)
            _hash_range(f, hasher, buf, start, start + length)
            pos = start + length
        hash_zeros(hasher, size - pos)
    return hasher.hexdigest()


def _excluded(rel: str, name: str) -> bool:
    top = rel.split("/", 1)[0]
    return rel == name or top in (INCOMPLETE_MARKER, LOCK_DIR) or rel.endswith(PARTIAL_SUFFIX)


def _walk(export_dir: Path, name: str) -> tuple[list[str], list[str]]:
    """(regular files, other entries such as symlinks), as sorted relative POSIX paths."""
    files: list[str] = []
    others: list[str] = []
    for dirpath, dirnames, filenames in os.walk(export_dir):
        rel_dir = os.path.relpath(dirpath, export_dir).replace(os.sep, "/")

        def rel_of(entry: str, rel_dir=rel_dir) -> str:
            return entry if rel_dir == "." else f"{rel_dir}/{entry}"

        for entry in list(dirnames):
            rel = rel_of(entry)
            if _excluded(rel, name):
                dirnames.remove(entry)
            elif os.path.islink(os.path.join(dirpath, entry)):  # walk does not follow these
                others.append(rel)
        for entry in filenames:
            rel = rel_of(entry)
            if _excluded(rel, name):
                continue
            full = os.path.join(dirpath, entry)
            (files if os.path.isfile(full) and not os.path.islink(full) else others).append(rel)
    return sorted(files), sorted(others)


def _escape(rel: str) -> tuple[str, str]:
    # GNU sha256sum's escaping: a leading backslash says the name holds \\, \n or \r escapes.
    if any(c in rel for c in "\\\n\r"):
        return "\\", rel.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return "", rel


def _unescape(rel: str) -> str:
    out, i = [], 0
    while i < len(rel):
        if rel[i] == "\\" and i + 1 < len(rel):
            out.append({"\\": "\\", "n": "\n", "r": "\r"}.get(rel[i + 1], rel[i + 1]))
            i += 2
        else:
            out.append(rel[i])
            i += 1
    return "".join(out)


def _check_relative(rel: str) -> str:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in rel:
        raise StagingError(f"manifest entry {rel!r} is not a plain relative path")
    return rel


def write_manifest(
    export_dir: Path,
    entries: dict[str, str] | None = None,
    *,
    name: str = MANIFEST,
    known: Mapping[str, str] | None = None,
    unlisted: set[str] | frozenset[str] = frozenset(),
) -> Path:
    """Write the manifest: ``entries`` ({relative path: sha256}) as given, or every file of the export.

    Without ``entries`` each file is hashed now, except those in ``known``: hashes computed
    while the file was written (a flat extent's is the disk's content hash), so a 1 GiB
    disk is not read a second time just to list it. A known file that is not in the
    export means the caller lost track of its files, an error rather than a silent gap.
    Files in ``unlisted`` (disks exported with ``--checksum none``) are left out.
    """
    export_dir = Path(export_dir)
    if entries is None:
        files, others = _walk(export_dir, name)
        if others:
            raise StagingError(
                f"{export_dir} holds {others[0]!r}, which is not a regular file; "
                f"an export never contains links or devices"
            )
        known = dict(known or {})
        missing = sorted(set(known) - set(files))
        if missing:
            raise StagingError(
                f"{missing[0]!r} was hashed while written but is not in {export_dir}"
            )
        entries = {
            rel: known.get(rel) or sha256_file(inside(export_dir, rel))
            for rel in files
            if rel not in unlisted
        }
    lines = []
    for rel in sorted(entries):
        flag, shown = _escape(_check_relative(rel))
        digest = entries[rel].lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise StagingError(
                f"manifest entry {rel!r} has no SHA-256 hex digest: {entries[rel]!r}"
            )
        lines.append(f"{flag}{digest}  {shown}\n")
    path = export_dir / name
    write_atomic(path, "".join(lines).encode("utf-8", "surrogateescape"))
    return path


def read_manifest(path) -> dict[str, str]:
    """{relative path: sha256} from a manifest; a malformed line is a :class:`VerifyError`."""
    try:
        text = Path(path).read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise VerifyError(f"cannot read manifest {path}: {exc.strerror or exc}") from exc
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if not match:
            raise VerifyError(f"{path} line {number} is not '<sha256>  <path>': {line[:80]!r}")
        escaped, digest, rel = match.groups()
        entries[_unescape(rel) if escaped else rel] = digest.lower()
    return entries


def verify_manifest(
    export_dir: Path, *, name: str = MANIFEST, own_dirs: tuple[str, ...] = ()
) -> list[str]:
    """Problems found ("missing: x", "changed: x", "unlisted: x", "unsafe: x"); an empty list
    means all good. ``own_dirs``: directories the writer makes even when they stay empty."""
    export_dir = Path(export_dir)
    manifest = export_dir / name
    if not manifest.is_file():
        return [f"missing: {name}"]
    listed = read_manifest(manifest)
    problems = []
    for rel, digest in sorted(listed.items()):
        try:
            _check_relative(rel)
            if (export_dir / rel).is_symlink():
                problems.append(f"changed: {rel} (now a symbolic link)")
                continue
            target = inside(export_dir, rel)
        except StagingError:
            problems.append(f"unsafe: {rel}")
            continue
        if not target.is_file():
            problems.append(f"missing: {rel}")
        elif sha256_file(target) != digest:
            problems.append(f"changed: {rel}")
    files, others = _walk(export_dir, name)
    problems.extend(f"unlisted: {rel}" for rel in sorted(set(files + others) - set(listed)))
    # A directory that holds nothing listed, however empty, is not part of what was written.
    present = [*listed, *files, *others, *(f"{d}/." for d in own_dirs)]
    problems.extend(f"unlisted: {rel}/" for rel in _empty_dirs(export_dir, name, present))
    return problems


def _empty_dirs(export_dir: Path, name: str, present: list[str]) -> list[str]:
    """Directories (relative, sorted) below ``export_dir`` holding no file at any depth, e.g.
    an empty one added after the export. The manifest names files only, and a directory with
    files in it is reported through them; without this an extra empty directory verified."""
    holding = {rel.rsplit("/", i)[0] for rel in present for i in range(1, rel.count("/") + 1)}
    found = []
    for dirpath, dirnames, _ in os.walk(export_dir):
        rel_dir = os.path.relpath(dirpath, export_dir).replace(os.sep, "/")
        for entry in list(dirnames):
            rel = entry if rel_dir == "." else f"{rel_dir}/{entry}"
            if _excluded(rel, name) or os.path.islink(os.path.join(dirpath, entry)):
                dirnames.remove(entry)  # a symlink is reported by _walk already
            elif rel not in holding:
                found.append(rel)
                dirnames.remove(entry)  # the outermost empty directory names what is in it
    return sorted(found)
