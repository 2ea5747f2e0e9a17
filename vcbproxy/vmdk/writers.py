"""Writing a virtual disk into the staging directory in one of VCB's output formats.

``open_writer(fmt, directory, basename, capacity)`` returns a :class:`DiskWriter`; the export
job feeds it ``(offset, bytes)`` in increasing order and calls ``close()`` (or ``abort()``).
Every file is written as ``<name>.partial`` and renamed into place only after an fsync, so a
crash never leaves a complete-looking but truncated disk behind.

Formats: ``2gbsparse`` (VCB's default: descriptor + twoGbMaxExtentSparse extents
``-s001.vmdk``...), ``monolithic`` (one monolithicSparse file), ``flat`` (descriptor +
``-flat.vmdk`` with holes) and ``stream`` (streamOptimized).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path

from vcbproxy.errors import StagingError
from vcbproxy.staging.space import free_bytes, human_size
from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.descriptor import SECTOR, Extent, new_descriptor, render
from vcbproxy.vmdk.sparse import SparseExtent, is_zero
from vcbproxy.vmdk.stream import StreamOptimizedWriter

FORMATS = ("2gbsparse", "monolithic", "flat", "stream")
# VMware's split size: 4192256 sectors (2047 MiB), a multiple of the 64 KiB grain below 2 GiB.
SPLIT_EXTENT_BYTES = 4192256 * SECTOR
PARTIAL = ".partial"


# Exported disks hold a VM's data: readable by the backup group, not by everyone (as the
# manifest, catalog and config files of an export).
FILE_MODE = 0o640

log = logging.getLogger(__name__)


# Dirty bytes after which the disk is told to start writing (see EarlyWriteback).
WRITEBACK_EVERY = 64 << 20


class EarlyWriteback:
    """``fdatasync`` of a file being written, in a worker thread every ``WRITEBACK_EVERY``
    bytes, so the storage writes while the copy goes on and the fsync at close finds little
    left to do (it was ~0.3 s after a 0.15 s copy of 418 MiB; cp never syncs).

    The worker's errors are raised again by :meth:`stop`: on Linux a write error is reported
    once per open file, so the final fsync alone might not see it.
    """

    def __init__(self, fd: int | None):
        self.fd = fd  # None: nothing to sync (not a local file)
        self._dirty = 0
        self._wake = threading.Event()
        self._stopping = False
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None

    def wrote(self, length: int) -> None:
        if self._error is not None:
            self.stop()  # the disk failed: stop copying onto it now
        self._dirty += length
        if self._dirty < WRITEBACK_EVERY or self.fd is None:
            return
        self._dirty = 0
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="writeback", daemon=True)
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        fd = self.fd
        while fd is not None:  # wrote() starts no thread without an fd
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                os.fdatasync(fd)
            except OSError as exc:
                self._error = exc
                return

    def stop(self) -> None:
        """Wait for the worker (before the fd is closed); raise what it met."""
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def abandon(self) -> None:
        """Stop for an abort, or after close() has raised the worker's error already."""
        with contextlib.suppress(OSError):
            self.stop()


def _create(path):
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "wb")


class DiskWriter(ABC):
    """Common bookkeeping: capacity and ordering checks, partial files, rename on close."""

    def __init__(
        self, directory: Path, basename: str, capacity: int, *, uuid: str | None, adapter: str
    ):
        if capacity <= 0 or capacity % SECTOR:
            raise VmdkError(f"disk capacity {capacity} is not a positive multiple of 512 bytes")
        self.directory = Path(directory)
        self.basename = basename
        self.capacity = capacity
        self.uuid = uuid
        self.adapter = adapter
        self._names: list[str] = []  # final names, descriptor first
        self._next = 0
        self._done = False

    def _partial(self, name: str) -> Path:
        return self.directory / (name + PARTIAL)

    def _register(self, name: str) -> Path:
        if name not in self._names:
            self._names.append(name)
        return self._partial(name)

    @property
    def raw_fd(self) -> int | None:
        """A file descriptor whose byte N is the disk's byte N (the flat format's raw extent),
        or None: a copier that has the source as a local file may fill it with
        copy_file_range and report the range with ``copied`` instead of passing the bytes
        to ``write``."""
        return None

    def _check(self, offset: int, length: int) -> None:
        if self._done:
            raise VmdkError("write after close/abort")
        if offset < self._next:
            raise VmdkError(f"disk writes must go forward ({offset} < {self._next})")
        if offset + length > self.capacity:
            raise VmdkError(f"write {offset}+{length} beyond the capacity {self.capacity}")

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        if data:
            try:
                self._write(offset, data)
            except OSError as exc:
                raise self.staging_error(exc) from exc
        self._next = offset + len(data)

    def staging_error(self, exc: OSError) -> StagingError:
        """A failure to write this disk (``exc``, also from a kernel copy into :attr:`raw_fd`)
        as the error to report: for a full staging disk, what someone who must make room needs
        to know (the directory, the file, how much more this disk needs); it is an operating
        condition, exit 14, not a bug."""
        name = self._names[-1] if self._names else self.basename
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            try:
                free = human_size(free_bytes(self.directory))
            except StagingError:
                free = "unknown"
            return StagingError(
                f"staging {self.directory} is full ({exc.strerror}): writing {name} stopped "
                f"at {human_size(self._next)} of a {human_size(self.capacity)} disk, which "
                f"needs up to {human_size(self.capacity - self._next)} more ({free} free)"
            )
        return StagingError(f"cannot write {self.directory / name}: {exc.strerror or exc}")

    def copied(self, offset: int, length: int) -> None:
        """Account for ``length`` bytes at ``offset`` put into :attr:`raw_fd` by the caller."""
        if self.raw_fd is None:
            raise VmdkError(f"{type(self).__name__} has no raw extent to copy into")
        self._check(offset, length)
        self._next = offset + length
        try:
            self._copied(length)
        except OSError as exc:
            raise self.staging_error(exc) from exc

    def _copied(self, length: int) -> None:  # noqa: B027 (optional hook, not abstract)
        """After :meth:`copied`: the writer's bookkeeping (a flat disk's early writeback)."""

    @abstractmethod
    def _write(self, offset: int, data: bytes) -> None: ...

    @abstractmethod
    def _finish(self) -> None:
        """Complete and fsync every partial file."""

    @abstractmethod
    def _close_handles(self) -> None: ...

    def close(self) -> list[str]:
        """Finish, fsync, rename into place; returns the file names, descriptor first."""
        if self._done:
            raise VmdkError("writer already closed")
        try:
            try:
                self._finish()
                self._close_handles()
                for name in self._names:
                    os.replace(self._partial(name), self.directory / name)
                _fsync_dir(self.directory)
            except OSError as exc:
                raise self.staging_error(exc) from exc
        except BaseException:
            self.abort()
            raise
        self._done = True
        return list(self._names)

    def abort(self) -> None:
        """Remove every partial file (safe to call more than once, or after a failed close)."""
        if self._done:
            return
        self._done = True
        try:
            self._close_handles()
        except OSError as exc:
            # Closing flushes what was buffered, which fails again on a full staging disk:
            # the data is being thrown away, and the error that made us abort is the one to
            # report (it was replaced by this one, an "unexpected failure", before).
            log.debug("closing the partial files of %s: %s", self.basename, exc)
        finally:
            for name in self._names:
                try:
                    self._partial(name).unlink(missing_ok=True)
                except OSError as exc:
                    log.warning("could not remove %s: %s", self._partial(name), exc)

    def _descriptor_text(self, create_type: str, extents: list[Extent]) -> str:
        return render(
            new_descriptor(
                create_type, extents, capacity=self.capacity, uuid=self.uuid, adapter=self.adapter
            )
        )

    def _write_descriptor(self, text: str) -> None:
        path = self._partial(self._names[0])
        with _create(path) as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())


class FlatWriter(DiskWriter):
    """monolithicFlat: descriptor + a raw ``-flat.vmdk`` whose zero ranges stay holes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._register(self.basename + ".vmdk")
        self.flat_name = self.basename + "-flat.vmdk"
        self._fd = os.open(
            self._register(self.flat_name), os.O_RDWR | os.O_CREAT | os.O_TRUNC, FILE_MODE
        )
        self._writeback = EarlyWriteback(self._fd)

    @property
    def raw_fd(self) -> int | None:
        return self._fd if self._fd >= 0 else None

    def _write(self, offset: int, data: bytes) -> None:
        if is_zero(data):
            return
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n
        self._writeback.wrote(len(data))

    def _copied(self, length: int) -> None:
        self._writeback.wrote(length)

    def _finish(self) -> None:
        os.ftruncate(self._fd, self.capacity)
        self._writeback.stop()
        os.fsync(self._fd)
        extent = Extent("RW", self.capacity // SECTOR, "FLAT", self.flat_name, 0)
        self._write_descriptor(self._descriptor_text("monolithicFlat", [extent]))

    def _close_handles(self) -> None:
        if self._fd >= 0:
            self._writeback.abandon()
            os.close(self._fd)
            self._fd = -1


class MonolithicSparseWriter(DiskWriter):
    """monolithicSparse: one file, descriptor embedded after the header."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        name = self.basename + ".vmdk"
        extent = Extent("RW", self.capacity // SECTOR, "SPARSE", name)
        text = self._descriptor_text("monolithicSparse", [extent])
        sparse = SparseExtent.create(self._register(name), self.capacity, descriptor=text)
        self._extent: SparseExtent | None = sparse
        self._writeback = EarlyWriteback(sparse.fileno())

    def _open_extent(self) -> SparseExtent:
        if self._extent is None:
            raise VmdkError("write after close/abort")
        return self._extent

    def _write(self, offset: int, data: bytes) -> None:
        self._open_extent().write(offset, data, flush=False)  # tables flushed once, by close()
        self._writeback.wrote(len(data))

    def _finish(self) -> None:
        self._writeback.stop()
        self._open_extent().sync()

    def _close_handles(self) -> None:
        if self._extent is not None:
            self._writeback.abandon()
            self._extent.close()
            self._extent = None


class SplitSparseWriter(DiskWriter):
    """twoGbMaxExtentSparse: descriptor + ``-sNNN.vmdk`` sparse extents of 2047 MiB each.

    Only the extent being written is open; its grain tables (128 KiB) are all we keep.
    """

    def __init__(self, *args, extent_bytes: int = SPLIT_EXTENT_BYTES, **kwargs):
        super().__init__(*args, **kwargs)
        self._register(self.basename + ".vmdk")
        self._extent_bytes = extent_bytes
        count = -(-self.capacity // extent_bytes)
        self._sizes = [min(extent_bytes, self.capacity - i * extent_bytes) for i in range(count)]
        self._extent_names = [f"{self.basename}-s{i + 1:03d}.vmdk" for i in range(count)]
        self._current = -1
        self._extent: SparseExtent | None = None
        self._writeback: EarlyWriteback | None = None

    def _switch(self, index: int) -> None:
        """Close the current extent and create the following ones up to ``index``."""
        while self._current < index:
            self._close_handles(sync=True)
            self._current += 1
            name = self._extent_names[self._current]
            extent = SparseExtent.create(self._register(name), self._sizes[self._current])
            self._extent, self._writeback = extent, EarlyWriteback(extent.fileno())

    def _write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            index, within = divmod(offset + pos, self._extent_bytes)
            n = min(self._extent_bytes - within, len(view) - pos)
            piece = view[pos : pos + n]
            if index > self._current:
                if is_zero(piece):  # don't open an extent for zeros; _finish creates it empty
                    pos += n
                    continue
                self._switch(index)
            if self._extent is None or self._writeback is None:
                raise VmdkError("write after close/abort")
            self._extent.write(within, piece, flush=False)
            self._writeback.wrote(n)
            pos += n

    def _finish(self) -> None:
        self._switch(len(self._sizes) - 1)
        self._close_handles(sync=True)
        extents = [
            Extent("RW", size // SECTOR, "SPARSE", name)
            for size, name in zip(self._sizes, self._extent_names, strict=True)
        ]
        self._write_descriptor(self._descriptor_text("twoGbMaxExtentSparse", extents))

    def _close_handles(self, sync: bool = False) -> None:
        if self._extent is not None and self._writeback is not None:
            extent, writeback, self._extent = self._extent, self._writeback, None
            try:
                if sync:
                    writeback.stop()
                    extent.sync()
            finally:
                writeback.abandon()
                extent.close()


class StreamWriter(DiskWriter):
    """streamOptimized: one compressed file written front to back."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        name = self.basename + ".vmdk"
        extent = Extent("RW", self.capacity // SECTOR, "SPARSE", name)
        text = self._descriptor_text("streamOptimized", [extent])
        self._file = _create(self._register(name))  # closed in _close_handles
        try:
            self._stream = StreamOptimizedWriter(self._file, self.capacity, descriptor=text)
        except BaseException:
            self.abort()
            raise

    def _write(self, offset: int, data: bytes) -> None:
        self._stream.write(offset, data)

    def _finish(self) -> None:
        self._stream.finish()
        self._file.flush()
        os.fsync(self._file.fileno())

    def _close_handles(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


_WRITERS = {
    "2gbsparse": SplitSparseWriter,
    "monolithic": MonolithicSparseWriter,
    "flat": FlatWriter,
    "stream": StreamWriter,
}


def open_writer(
    fmt: str,
    directory: Path,
    basename: str,
    capacity: int,
    *,
    uuid: str | None = None,
    adapter: str = "lsilogic",
) -> DiskWriter:
    """A writer for ``fmt`` (one of :data:`FORMATS`); the descriptor is ``<basename>.vmdk``."""
    cls = _WRITERS.get(fmt)
    if cls is None:
        raise VmdkError(f"unknown disk format {fmt!r}; use one of: {', '.join(FORMATS)}")
    try:
        return cls(Path(directory), basename, capacity, uuid=uuid, adapter=adapter)
    except OSError as exc:
        full = " is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise StagingError(
            f"staging {directory}{full}: cannot create {basename}.vmdk ({fmt}, "
            f"{human_size(capacity)}): {exc.strerror or exc}"
        ) from exc


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
