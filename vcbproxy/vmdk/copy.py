"""Copying one disk, as it was at the snapshot, into a staged VMDK.

The source is a :class:`vcbproxy.vmdk.chain.DiskChain` read through a transport: the
chain's run map says, for every byte of the virtual disk, which layer file holds it (or
that it is zero), so a disk that already had user snapshots comes out as one
consolidated image and unallocated regions are never fetched from the host.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from vcbproxy.errors import StagingError
from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.chain import Run, skip_holes

ZERO_CHUNK = bytes(1 << 20)
# A kernel copy (copy_file_range) moves this much between progress updates and Ctrl-C checks.
KERNEL_PIECE = 64 << 20
# Chunks waiting for the hashing thread. Transports yield chunks of at most 1 MiB, so this
# bounds the bytes in flight to a few MiB however far the reader runs ahead.
HASH_QUEUE_DEPTH = 4


@dataclass
class DiskCopyResult:
    capacity: int
    bytes_read: int = 0  # bytes fetched from the host
    bytes_zero: int = 0  # bytes known to be zero (never fetched)
    content_sha256: str = ""  # of the whole virtual disk, zeros included
    allocation_map: bool = False  # only the areas the host reported allocated were read
    seconds: float = 0.0
    sync_seconds: float = 0.0  # closing the staged files: the fsync the copy left to do
    files: list[str] = field(default_factory=list)
    # {file name: sha256} of written files whose hash is known without reading them back
    # (a raw flat extent, truncated to the capacity, holds the disk byte for byte; a stored
    # NFC stream was hashed as it arrived); the manifest uses them.
    file_sha256: dict[str, str] = field(default_factory=dict)


class _Worker:
    """A daemon thread applying :meth:`_handle` to items of a small bounded queue, in order.

    ``put`` blocks when the queue is full, which keeps memory bounded. A failure in the
    worker is raised again in the producing thread at its next ``put`` or at :meth:`finish`;
    after one the worker drains the queue without handling, so ``put`` never blocks on a
    dead worker. Items must not change after ``put``: transports yield immutable ``bytes``.
    """

    name = "diskcopy-worker"

    def __init__(self, depth: int = HASH_QUEUE_DEPTH):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abandoned = False
        # A daemon: if the copying thread dies without closing us, exit is not held up.
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _handle(self, item) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None and not self._abandoned:
                    self._handle(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the copying thread
                self._error = exc
            finally:
                self._queue.task_done()

    def put(self, item) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def drain(self) -> None:
        """Wait until every item given so far is handled; raise what the worker met."""
        self._queue.join()
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        """Wait for the queued items and stop the worker; raise what it met."""
        self.close()
        if self._error is not None:
            raise self._error

    def close(self, *, abandon: bool = False) -> None:
        """Stop the worker (idempotent); ``abandon`` drops what is still queued."""
        if abandon:
            self._abandoned = True
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(abandon=exc_type is not None)


class _BackgroundHasher(_Worker):
    """SHA-256 in a worker thread.

    ``hashlib`` releases the GIL while it hashes a buffer larger than 2 KiB, so while the
    worker hashes one chunk the copying thread reads the next (socket reads, TLS or SSH
    decryption) and writes it: reading, hashing and writing overlap instead of taking turns.
    """

    name = "diskcopy-sha256"

    def __init__(self, depth: int = HASH_QUEUE_DEPTH):
        self._hasher = hashlib.sha256()
        super().__init__(depth)

    def _handle(self, item) -> None:
        if isinstance(item, int):
            self._zeros(item)
        elif isinstance(item, tuple):
            self._from_fd(*item)
        else:
            self._hasher.update(item)

    def _zeros(self, length: int) -> None:
        # A zero run can be most of a large disk: stop early when the copy was abandoned,
        # so Ctrl-C does not wait for seconds of hashing nobody will use.
        view = memoryview(ZERO_CHUNK)
        while length > 0 and not self._abandoned:
            n = min(length, len(ZERO_CHUNK))
            self._hasher.update(view[:n])
            length -= n

    def _from_fd(self, fd: int, offset: int, length: int) -> None:
        # Bytes a kernel copy just wrote: read back from the page cache, here in the worker,
        # so the copying thread goes on with the next range meanwhile.
        buf = bytearray(len(ZERO_CHUNK))
        view = memoryview(buf)
        end = offset + length
        while offset < end and not self._abandoned:
            n = os.preadv(fd, [view[: min(len(buf), end - offset)]], offset)
            if n <= 0:
                raise StagingError(f"the staged disk ended at {offset}, before {end}")
            self._hasher.update(view[:n])
            offset += n

    def update(self, data) -> None:
        if not isinstance(data, bytes):
            data = bytes(data)  # a reused buffer could change before the worker reads it
        self.put(data)

    def zeros(self, length: int) -> None:
        if length > 0:
            self.put(length)

    def from_fd(self, fd: int, offset: int, length: int) -> None:
        """Hash ``length`` bytes of ``fd`` at ``offset``; the fd must stay open until
        :meth:`hexdigest` or :meth:`close` returns."""
        if length > 0:
            self.put((fd, offset, length))

    def hexdigest(self) -> str:
        """Wait for the queued chunks; the digest of everything given."""
        self.finish()
        return self._hasher.hexdigest()


class _BackgroundWriter(_Worker):
    """The disk writer's ``write`` in a worker thread, chunks in order.

    Writing (zero detection, ``pwrite`` into the page cache, sparse grain tables) takes the
    copying thread away from the socket; with a writer of its own it goes on reading, so
    the host keeps sending while the staged disk is written. A slow staging file system
    (page cache under pressure, early writeback) then no longer stalls the transfer.
    Whoever uses the writer directly (a kernel copy, ``close``) calls :meth:`drain` or
    :meth:`finish` first.
    """

    name = "diskcopy-write"

    def __init__(self, writer, depth: int = HASH_QUEUE_DEPTH):
        self.writer = writer
        super().__init__(depth)

    def _handle(self, item) -> None:
        self.writer.write(*item)

    def write(self, offset: int, data: bytes) -> None:
        self.put((offset, data))


class _NoHasher:
    """``--checksum none``: the hasher's interface, hashing nothing, so no byte that a kernel
    copy moves is ever read into the proxy."""

    def update(self, data) -> None:
        pass

    def zeros(self, length: int) -> None:
        pass

    def from_fd(self, fd: int, offset: int, length: int) -> None:
        pass

    def hexdigest(self) -> str:
        return ""

    def __enter__(self) -> _NoHasher:
        return self

    def __exit__(self, *exc) -> None:
        pass


def _hasher(checksum: bool):
    return _BackgroundHasher() if checksum else _NoHasher()


def _known_file_hashes(writer, result: DiskCopyResult) -> dict[str, str]:
    """A writer's raw flat extent (``flat_name``) is the disk's content as is: same hash."""
    flat_name = getattr(writer, "flat_name", None)
    return {flat_name: result.content_sha256} if flat_name and result.content_sha256 else {}


def _kernel_copy(
    source, writer, run: Run, hasher, advance: Callable[[int], None], *, before=lambda: None
) -> bool:
    """Copy ``run`` with the source's kernel path into the writer's raw extent, if both
    have one (a SAN file into a flat disk): the bytes never pass through Python, and the
    hash worker reads them back from the page cache. False if the path does not apply.
    ``before`` runs first when it does (the background writer's writes must land first)."""
    fd = writer.raw_fd
    if fd is None or not hasattr(source, "copy_to_fd"):
        return False
    before()
    pos, end = run.offset, run.offset + run.length
    while pos < end:
        n = min(KERNEL_PIECE, end - pos)
        try:
            done = source.copy_to_fd(fd, run.source_offset + (pos - run.offset), n, pos)
        except OSError as exc:  # only the writing side's errors come through as OSError
            raise writer.staging_error(exc) from exc
        if done != n:
            raise VmdkError(
                f"short read from {run.source}: got {pos + done - run.offset} of {run.length} bytes"
            )
        writer.copied(pos, n)
        hasher.from_fd(fd, pos, n)
        advance(n)
        pos += n
    return True


def copy_runs(
    runs: Iterable,
    stream_of: Callable[[str, int, int], Iterable[bytes]],
    writer,
    *,
    capacity: int,
    advance: Callable[[int], None] = lambda n: None,
    checksum: bool = True,
) -> DiskCopyResult:
    """Copy ``runs`` (offset, length, source, source_offset) into ``writer``.

    ``stream_of(source, offset, length)`` yields the bytes of a layer file range; if it
    also has ``open(source)`` (``vcbproxy.transport.chain.LayerFiles``), holes of the
    sources are skipped and a kernel copy is used where source and writer allow it. The
    content hash covers zeros too, so it equals ``sha256`` of the raw disk — the value
    tests and ``verify`` compare with the source. ``checksum=False`` leaves it empty.
    """
    result = DiskCopyResult(capacity=capacity)
    started = time.monotonic()
    position = 0
    open_file = getattr(stream_of, "open", None)
    with _hasher(checksum) as hasher, _BackgroundWriter(writer) as background:
        for run in skip_holes(runs, open_file):
            if run.offset != position:
                raise VmdkError(f"disk map has a gap at {position} (next run at {run.offset})")
            if run.source is None:
                hasher.zeros(run.length)
                result.bytes_zero += run.length
                advance(run.length)
            elif open_file is not None and _kernel_copy(
                open_file(run.source), writer, run, hasher, advance, before=background.drain
            ):
                result.bytes_read += run.length
            else:
                offset = run.offset
                for chunk in stream_of(run.source, run.source_offset, run.length):
                    if not isinstance(chunk, bytes):
                        # a reused buffer could change before the workers read it
                        chunk = bytes(chunk)
                    hasher.update(chunk)
                    background.write(offset, chunk)
                    offset += len(chunk)
                    advance(len(chunk))
                if offset != run.offset + run.length:
                    raise VmdkError(
                        f"short read from {run.source}: got {offset - run.offset} of {run.length} bytes"
                    )
                result.bytes_read += run.length
            position = run.offset + run.length
        if position != capacity:
            raise VmdkError(f"disk map covers {position} of {capacity} bytes")
        background.finish()
        result.content_sha256 = hasher.hexdigest()
    result.file_sha256 = _known_file_hashes(writer, result)
    result.seconds = time.monotonic() - started
    return result


def copy_grains(
    grains: Iterable[tuple[int, bytes]],
    writer,
    *,
    capacity: int,
    advance: Callable[[int], None] = lambda n: None,
    checksum: bool = True,
) -> DiskCopyResult:
    """Copy a stream of (offset, data) grains in ascending order — an NFC download —
    into ``writer``; gaps between grains are zeros (hashed, never written)."""
    result = DiskCopyResult(capacity=capacity)
    started = time.monotonic()
    position = 0
    with _hasher(checksum) as hasher:
        for offset, data in grains:
            if offset < position:
                raise VmdkError(f"stream went backwards: grain at {offset} after {position}")
            if offset > position:
                hasher.zeros(offset - position)
                result.bytes_zero += offset - position
                advance(offset - position)
            data = data[: max(0, capacity - offset)]
            hasher.update(data)
            writer.write(offset, data)
            result.bytes_read += len(data)
            advance(len(data))
            position = offset + len(data)
        if position < capacity:
            hasher.zeros(capacity - position)
            result.bytes_zero += capacity - position
            advance(capacity - position)
        result.content_sha256 = hasher.hexdigest()
    result.file_sha256 = _known_file_hashes(writer, result)
    result.seconds = time.monotonic() - started
    return result
