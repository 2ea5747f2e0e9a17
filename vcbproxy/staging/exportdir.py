"""The lifecycle of one export directory: prepare (the PREEXISTING_MOUNTPOINT policy), fill, complete, remove.

While an export runs, the directory holds a hidden marker file; ``complete()`` removes
it last. So a directory with the marker is ours but unfinished, and both ``prepare``
and ``remove`` only ever delete directories that look like exports of ours.
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


class ExportDir:
    """One export directory; create it with :meth:`prepare`."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def prepare(cls, path: Path, *, preexisting: str = "fail") -> ExportDir:
        """Create ``path`` (mode 0750) for a new export, applying the pre-existing directory policy."""
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
        marker = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_atomic(path / INCOMPLETE_MARKER, (json.dumps(marker) + "\n").encode())
        return cls(path)

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
