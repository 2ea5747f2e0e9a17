"""Free-space check before the first byte is copied: failing early beats filling the staging disk."""

from __future__ import annotations

import os
from pathlib import Path

from vcbproxy.errors import StagingError

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(nbytes: float) -> str:
    """1288490188 → '1.2 GiB' (binary units, as df -h)."""
    value = float(nbytes)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer may still use where ``directory`` (or its nearest existing parent) lives."""
    path = Path(directory).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError as exc:
        raise StagingError(
            f"cannot check free space of {directory}: {exc.strerror or exc}"
        ) from exc
    return st.f_bavail * st.f_frsize


def check_free_space(directory: Path, needed_bytes: int, *, margin: float = 0.05) -> int:
    """Refuse to start when ``needed_bytes`` plus ``margin`` do not fit; returns the free bytes."""
    free = free_bytes(directory)
    required = int(needed_bytes * (1 + margin))
    if free < required:
        raise StagingError(
            f"not enough space in staging {directory}: {human_size(free)} free, "
            f"the export needs up to {human_size(required)}"
        )
    return free
