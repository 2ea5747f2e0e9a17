"""VCB's ``catalog`` file: plain ``key= value`` lines that backup products read to identify an export.

VCB wrote one ``key= value`` pair per line (``display name= web01``,
``disk.scsi0:0.filename= scsi0-0-0-web01.vmdk``, ``config.vmx= "[ds] web01/web01.vmx"``);
keys may contain spaces, values keep their quotes as written. A value holding a control
character (a display name with a newline or a tab is legal in vSphere) or a backslash is
written with C-style escapes (``vcbproxy.lines``) so that it stays on its line; ``read_catalog``
undoes them.
"""

from __future__ import annotations

from pathlib import Path

from vcbproxy.errors import StagingError
from vcbproxy.lines import escape, unescape
from vcbproxy.staging.atomic import write_atomic

CATALOG = "catalog"


def write_catalog(export_dir: Path, fields: dict[str, str]) -> Path:
    """Write ``export_dir/catalog`` atomically, in the order of ``fields``."""
    lines = []
    for key, value in fields.items():
        key, value = str(key), "" if value is None else str(value)
        # Keys are ours: one that would not fit is a bug, and refused before anything is written.
        if not key.strip() or "=" in key or escape(key) != key:
            raise StagingError(f"catalog key {key!r} cannot be written on one line")
        lines.append(f"{key}= {escape(value)}\n")
    path = Path(export_dir) / CATALOG
    write_atomic(path, "".join(lines).encode("utf-8", "surrogateescape"))
    return path


def read_catalog(path) -> dict[str, str]:
    """{key: value} from a catalog file (or an export directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / CATALOG
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise StagingError(f"cannot read catalog {path}: {exc.strerror or exc}") from exc
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise StagingError(f"{path}: line {line[:80]!r} is not 'key= value'")
        fields[key.strip()] = unescape(value[1:] if value.startswith(" ") else value)
    return fields
