"""VCB's ``catalog`` file: plain ``key= value`` lines that backup products read to identify an export.

VCB wrote one ``key= value`` pair per line (``display name= web01``,
``disk.scsi0:0.filename= scsi0-0-0-web01.vmdk``, ``config.vmx= "[ds] web01/web01.vmx"``);
keys may contain spaces, values keep their quotes as written.
"""

from __future__ import annotations

from pathlib import Path

from vcbproxy.errors import StagingError
from vcbproxy.staging.atomic import write_atomic

CATALOG = "catalog"


def write_catalog(export_dir: Path, fields: dict[str, str]) -> Path:
    """Write ``export_dir/catalog`` atomically, in the order of ``fields``."""
    lines = []
    for key, value in fields.items():
        key, value = str(key), "" if value is None else str(value)
        if not key.strip() or "=" in key or any(c in key + value for c in "\r\n"):
            raise StagingError(f"catalog entry {key!r}= {value!r} cannot be written on one line")
        lines.append(f"{key}= {value}\n")
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
        fields[key.strip()] = value[1:] if value.startswith(" ") else value
    return fields
