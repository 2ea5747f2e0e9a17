"""Whole-file atomic writes for the small files of an export (.vmx, .nvram, logs, manifests).

Bytes go to ``<name>.partial``, hashed on the way; only ``commit()`` fsyncs and renames
the file into place, so a backup product can never pick up a half-written file under
its final name — not after an error, not after the process was killed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
from pathlib import Path

from vcbproxy.errors import StagingError

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"


def _staging_error(action: str, path: Path, exc: OSError) -> StagingError:
    if exc.errno == errno.ENOSPC:
        return StagingError(f"staging is full: cannot {action} {path}")
    return StagingError(f"cannot {action} {path}: {exc.strerror or exc}")


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise _staging_error("open directory", Path(path), exc) from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems (certain FUSE and network mounts) refuse fsync on a directory.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise _staging_error("sync directory", Path(path), exc) from exc
    finally:
        os.close(fd)


class AtomicFile:
    """Write ``path`` atomically; use as a context manager (commit on clean exit, abort on error)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.size = 0
        self.sha256: str | None = None
        self._hasher = hashlib.sha256()
        self._state = "open"
        try:
            # A .partial left by a killed run is garbage; O_EXCL|O_NOFOLLOW after removing it
            # means we never write through a symlink someone planted under that name.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.partial)
            fd = os.open(
                self.partial,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o640,
            )
        except OSError as exc:
            raise _staging_error("create", self.partial, exc) from exc
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)

    def write(self, data) -> int:
        if self._state != "open":
            raise StagingError(f"{self.path}: write after {self._state}")
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise _staging_error("write", self.partial, exc) from exc
        self._hasher.update(data)
        n = len(memoryview(data).cast("B"))
        self.size += n
        return n

    def commit(self) -> str:
        """fsync, rename into place, fsync the directory; returns the SHA-256 hex of the content."""
        if self._state == "committed":
            return self.sha256 or ""
        if self._state != "open":
            raise StagingError(f"{self.path}: commit after abort")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.partial, self.path)
        except OSError as exc:
            self.abort()
            raise _staging_error("write", self.path, exc) from exc
        self._state = "committed"
        fsync_dir(self.path.parent)
        self.sha256 = self._hasher.hexdigest()
        return self.sha256

    def abort(self) -> None:
        """Drop the .partial; the final name is left as it was. Safe to call twice."""
        if self._state != "open":
            return
        self._state = "aborted"
        try:
            self._file.close()
        except OSError:
            pass  # the data is being thrown away; a failing flush changes nothing
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.partial)
        except OSError as exc:
            log.warning("could not remove %s: %s", self.partial, exc)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_atomic(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; returns its SHA-256 hex."""
    with AtomicFile(path) as out:
        out.write(data)
    return out.sha256 or ""
