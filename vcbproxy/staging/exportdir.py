"""The lifecycle of one export directory: prepare (the PREEXISTING_MOUNTPOINT policy), fill, complete, remove.

While an export runs, the directory holds a hidden marker file; ``complete()`` removes
it last. So a directory with the marker is ours but unfinished, and both ``prepare``
and ``remove`` only ever delete directories that look like exports of ours.

The marker is also the export's identity from its first moment, before any data: the VM,
the server, the job that owns it and, once taken, the snapshot. After a ``kill -9``,
``unmount`` and the post-command read it to find the VM and remove the dead job's snapshot
and the unfinished directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from vcbproxy.errors import StagingError
from vcbproxy.staging.atomic import fsync_dir, write_atomic
from vcbproxy.staging.catalog import CATALOG
from vcbproxy.staging.metadata import METADATA
from vcbproxy.staging.names import check_component, inside

log = logging.getLogger(__name__)

INCOMPLETE_MARKER = ".vcbproxy-incomplete"
OURS = (METADATA, CATALOG, INCOMPLETE_MARKER)
POLICIES = ("fail", "delete")
DIR_MODE = 0o750


def looks_like_export(path: Path) -> bool:
    """An (unfinished) vcbproxy export, a VCB export (catalog), or an empty directory."""
    try:
        entries = os.listdir(path)
    except OSError as exc:
        raise StagingError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return not entries or any(name in entries for name in OURS)


def read_identity(path: Path) -> dict | None:
    """The identity in an unfinished export's marker; None when ``path`` has no marker (or
    not one that can be read)."""
    try:
        data = json.loads((Path(path) / INCOMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class ExportDir:
    """One export directory; create it with :meth:`prepare`."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def prepare(
        cls, path: Path, *, preexisting: str = "fail", identity: dict | None = None
    ) -> ExportDir:
        """Create ``path`` (mode 0750) for a new export, applying the pre-existing directory
        policy; its marker holds ``identity`` (``vm``, ``server``, ``owner``) at once."""
        if preexisting not in POLICIES:
            raise StagingError(
                f"unknown pre-existing mount point policy {preexisting!r}; use one of: "
                + ", ".join(POLICIES)
            )
        path = Path(path)
        if path.is_symlink():
            raise StagingError(
                f"{path} is a symbolic link; give the real directory as the export directory"
            )
        if path.exists():
            if not path.is_dir():
                raise StagingError(f"{path} exists and is not a directory")
            if any(path.iterdir()):
                if preexisting == "fail":
                    raise StagingError(
                        f"{path} already exists and is not empty (a previous export?); remove it with "
                        f"'vcbproxy unmount -r {path}' or use --preexisting-mountpoint delete"
                    )
                if not looks_like_export(path):
                    raise StagingError(
                        f"{path} is not a vcbproxy export (no {METADATA}, {CATALOG} or marker); "
                        f"refusing to delete it"
                    )
                log.warning("removing pre-existing export directory %s", path)
                cls._rmtree(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir(mode=DIR_MODE, exist_ok=True)
            os.chmod(path, DIR_MODE)  # mkdir's mode is cut by the umask
        except OSError as exc:
            raise StagingError(
                f"cannot create export directory {path}: {exc.strerror or exc}"
            ) from exc
        marker = {
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(identity or {}),
        }
        export = cls(path)
        export._write_marker(marker)
        return export

    def record_snapshot(self, moref: str) -> None:
        """Add the snapshot, once taken, to the identity in the marker."""
        marker = read_identity(self.path) or {}
        marker["snapshot"] = moref
        self._write_marker(marker)

    def _write_marker(self, marker: dict) -> None:
        data = json.dumps(marker, ensure_ascii=False) + "\n"
        write_atomic(self.path / INCOMPLETE_MARKER, data.encode("utf-8"))

    def file(self, name: str) -> Path:
        """The path of file ``name`` directly inside the export (refused if unsafe or escaping)."""
        return inside(self.path, check_component(name))

    @property
    def is_complete(self) -> bool:
        return not (self.path / INCOMPLETE_MARKER).exists()

    def complete(self) -> None:
        """Mark the export complete: the marker goes last, after every file is in place."""
        try:
            (self.path / INCOMPLETE_MARKER).unlink(missing_ok=True)
        except OSError as exc:
            raise StagingError(f"cannot mark {self.path} complete: {exc.strerror or exc}") from exc
        fsync_dir(self.path)

    @staticmethod
    def remove(path: Path) -> bool:
        """Remove an export directory; False if it is already gone. Refuses what is not an export."""
        path = Path(path)
        if path.is_symlink():
            raise StagingError(
                f"{path} is a symbolic link, not an export directory; not removing it"
            )
        if not path.exists():
            return False
        if not path.is_dir():
            raise StagingError(f"{path} is not a directory; not removing it")
        if not looks_like_export(path):
            raise StagingError(
                f"{path} is not a vcbproxy export (no {METADATA}, {CATALOG} or marker); "
                f"not removing it"
            )
        ExportDir._rmtree(path)
        return True

    @staticmethod
    def _rmtree(path: Path) -> None:
        try:
            # rmtree unlinks symlinks inside the tree; it never follows them out of it.
            shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StagingError(f"cannot remove {path}: {exc.strerror or exc}") from exc
        try:
            fsync_dir(path.parent)
        except StagingError as exc:
            log.debug("%s", exc)
