"""The Transport interface: how the proxy reaches the bytes of a datastore file.

Every mode (network file service, direct storage, the host's shell, ...) hands out
:class:`RandomAccess` objects for datastore files; ``vcbproxy.vmdk.chain.DiskChain``
reads descriptors and extents through them and the export job copies ranges with
``stream``. One interface keeps every mode producing the same export.

Optional extensions of ``RandomAccess`` (used by the copier when present):

* ``holes_known: bool`` and ``data_ranges(offset, length) -> Iterator[(offset, length)]``:
  the source can tell which byte ranges hold data (SEEK_DATA/SEEK_HOLE in SAN mode), so
  holes need not be read at all.
* ``copy_to_fd(dst_fd, offset, length, dst_offset) -> int``: a kernel copy path
  (``copy_file_range``) that never brings the bytes into Python.
"""

from __future__ import annotations

import contextlib
import posixpath
import ssl
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

from vcbproxy import errors
from vcbproxy.models import DatastorePath, DiskInfo, SnapshotRef
from vcbproxy.transport.chain import ChainDisks
from vcbproxy.transport.disks import SnapshotDisks

# Datastore files referenced by absolute host paths (a parentFileNameHint written by ESXi).
VMFS_VOLUMES = "/vmfs/volumes/"


class Lease(Protocol):
    """An NFC export lease, ready (``vcbproxy.vsphere.lease.ExportLease``): its device URLs,
    kept alive with progress calls; leaving its ``with`` block completes or aborts it."""

    device_urls: list[dict]

    def progress(self, pct: int) -> None: ...

    def __enter__(self) -> Lease: ...

    def __exit__(self, exc_type, exc, tb) -> None: ...


class Session(Protocol):
    """What the transports use of a logged-in session (``vcbproxy.vsphere.session.Session``):
    where the server is, how to trust it and authenticate to it, and the few things only
    the server can say."""

    # Read-only properties, so that a session whose context is never None still matches.
    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def ssl_context(self) -> ssl.SSLContext | None: ...

    @property
    def thumbprint(self) -> str | None:
        """A pinned certificate (SHA-1 or SHA-256), checked instead of the CA chain."""
        ...

    @property
    def cookie(self) -> str:
        """The ``Cookie`` header that authenticates file-service requests."""
        ...

    def file_url(
        self,
        file: DatastorePath,
        *,
        scheme: str = "https",
        port: int | None = None,
        datacenter: str | None = None,
    ) -> str:
        """The file service URL of ``file``; ``datacenter`` (an inventory path) is the one
        holding its datastore, None for "the only datacenter with a datastore of that name"."""
        ...

    def export_lease(self, snapshot: SnapshotRef) -> Lease: ...

    def datastore_urls(self, datacenter: str | None = None) -> dict[str, str]:
        """``{datastore name: "ds:///vmfs/volumes/<uuid>/"}`` of one datacenter's datastores."""
        ...


@runtime_checkable
class RandomAccess(Protocol):
    """Same shape as ``vcbproxy.vmdk.io.RandomAccess`` (structural typing, no import cycle)."""

    size: int

    def pread(self, offset: int, length: int) -> bytes: ...

    def stream(self, offset: int, length: int, chunk: int = 1 << 20) -> Iterator[bytes]: ...

    def close(self) -> None: ...


@dataclass
class TransferStats:
    """Counters shared by every file a transport opens; safe to bump from several threads."""

    bytes_read: int = 0
    requests: int = 0
    # Bytes that crossed the network, where that differs from bytes_read and is counted
    # (SSH's python reader sends zero blocks as 5-byte records); 0 elsewhere.
    bytes_on_wire: int = 0
    retries: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(
        self,
        *,
        bytes_read: int = 0,
        requests: int = 0,
        retries: int = 0,
        seconds: float = 0.0,
        bytes_on_wire: int = 0,
    ) -> None:
        with self._lock:
            self.bytes_read += bytes_read
            self.bytes_on_wire += bytes_on_wire
            self.requests += requests
            self.retries += retries
            self.seconds += seconds

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            return {
                "bytes_read": self.bytes_read,
                "bytes_on_wire": self.bytes_on_wire,
                "requests": self.requests,
                "retries": self.retries,
                "seconds": round(self.seconds, 6),
            }


def resolve_relative(directory: DatastorePath, name: str) -> DatastorePath:
    """Where a file named in a descriptor (relative to ``directory``) lives.

    Names come from the server (descriptor extents, parentFileNameHint), so they may be
    relative with ``..`` (linked clones), or absolute ``/vmfs/volumes/<ds>/...``; anything
    that leaves the datastore, or is some other absolute path, is refused.
    """
    if not name or "\x00" in name:
        raise errors.TransportError(f"invalid file name {name!r} in {directory}")
    if name.startswith(VMFS_VOLUMES):
        datastore, _, rest = name[len(VMFS_VOLUMES) :].partition("/")
        path = posixpath.normpath(rest) if rest else ""
        if not datastore or not path or path.startswith(("..", "/")) or path == ".":
            raise errors.TransportError(f"file name {name!r} does not name a datastore file")
        return DatastorePath(datastore, path)
    if name.startswith("/"):
        raise errors.TransportError(
            f"file name {name!r} in {directory} is an absolute path outside {VMFS_VOLUMES}"
        )
    path = posixpath.normpath(posixpath.join(directory.path, name))
    if path == ".." or path.startswith("../") or path == ".":
        raise errors.TransportError(f"file name {name!r} leaves datastore [{directory.datastore}]")
    return DatastorePath(directory.datastore, path)


class Transport(ABC):
    """A way to read datastore files. Keyword-only methods, context manager, shared stats."""

    name: ClassVar[str]
    # What one more request costs, in bytes one could have read instead: reading areas
    # separated by less than this is cheaper as one range (see transport.chain.coalesce).
    request_cost: ClassVar[int] = 0

    def __init__(self) -> None:
        self.stats = TransferStats()

    @abstractmethod
    def open(self, *, file: DatastorePath) -> RandomAccess:
        """Open one datastore file for reading; raises a VcbProxyError when it cannot."""

    def opener(self, *, directory: DatastorePath) -> Callable[[str], RandomAccess]:
        """A function opening names relative to ``directory`` (what DiskChain.open wants)."""

        def open_name(name: str) -> RandomAccess:
            return self.open(file=resolve_relative(directory, name))

        return open_name

    def can_serve(self, file: DatastorePath) -> bool:
        """Whether this mode can reach ``file`` at all (SAN: only mapped datastores); a
        fallback chain skips a mode that cannot without trying it."""
        return True

    @property
    def served_by(self) -> dict[str, str]:
        """``{"[ds] path": mode}`` of the files opened, where a chain chose between modes."""
        return {}

    @contextlib.contextmanager
    def disks_at(self, snapshot: SnapshotRef, disks: Sequence[DiskInfo]) -> Iterator[SnapshotDisks]:
        """The whole disks of ``snapshot``, for as long as the block lasts. File modes read
        each disk's chain of files through :meth:`open`; NFC overrides this with its lease."""
        yield ChainDisks(self)

    def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release connections; files already opened must not be used afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
