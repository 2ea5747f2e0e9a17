"""Reading a disk as it was at a snapshot as its chain of files, through any file mode.

Shared by the full export and the CBT backup: open the snapshot's top descriptor,
follow the chain down to the base, and hand out ranged streams of the layer files.
:class:`ChainDisks` is how every file mode (nbd, nbdssl, san, ssh, chains of them) hands
whole disks to the export (see ``vcbproxy.transport.disks``).
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from vcbproxy import errors
from vcbproxy.models import DatastorePath, DiskInfo
from vcbproxy.transport.disks import Areas, DiskSource, DiskTarget, SnapshotDisks
from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.chain import DiskChain, Run
from vcbproxy.vmdk.copy import DiskCopyResult, copy_runs
from vcbproxy.vmdk.io import OpenFiles
from vcbproxy.vmdk.readplan import planned
from vcbproxy.vmdk.writers import DiskWriter, open_writer

if TYPE_CHECKING:  # the transports import this module
    from vcbproxy.transport.base import Transport

log = logging.getLogger(__name__)


class LayerFiles(OpenFiles):
    """The layer files of one disk, each opened once through the transport.

    Called as ``stream_of(name, offset, length)`` it yields the bytes of a range of one
    layer file; ``open(name)`` hands out the file itself, for copiers that use a
    transport's extensions (holes, kernel copies; see ``vcbproxy.transport.base``).
    """

    def __call__(self, name: str, offset: int, length: int):
        return self.open(name).stream(offset, length)


def _layer_files(transport: Transport, disk: DiskInfo) -> tuple[str, LayerFiles]:
    """The top descriptor's name and the files of ``disk``, opened relative to its folder."""
    top = disk.top.descriptor.location
    directory = DatastorePath(top.datastore, posixpath.dirname(top.path))
    return posixpath.basename(top.path), LayerFiles(transport.opener(directory=directory))


@contextlib.contextmanager
def disk_chain(transport: Transport, disk: DiskInfo) -> Iterator[tuple[DiskChain, LayerFiles]]:
    """Yield ``(chain, stream_of)`` for ``disk``: a :class:`LayerFiles`; every file opened is
    closed afterwards."""
    name, files = _layer_files(transport, disk)
    try:
        chain = DiskChain.open(name, files.open)
        yield chain, files
    finally:
        files.close()


class ChainDisks(SnapshotDisks):
    """File modes: each disk is its chain of descriptor and extent files, read through the
    transport's ``open``, reading only the allocated areas when the host can tell them."""

    def __init__(self, transport: Transport):
        self.transport = transport

    def open(self, disk: DiskInfo, *, label: str, allocated: Callable[[], Areas]) -> ChainDisk:
        return ChainDisk(self.transport, disk, label=label, allocated=allocated)


class ChainDisk(DiskSource):
    def __init__(
        self,
        transport: Transport,
        disk: DiskInfo,
        *,
        label: str,
        allocated: Callable[[], Areas],
    ):
        self.transport = transport
        self.label = label
        self._allocated = allocated
        name, self.files = _layer_files(transport, disk)
        try:
            self.chain = DiskChain.open(name, self.files.open)
        except VmdkError as exc:
            self.files.close()
            raise errors.TransportError(f"{label}: cannot read the disk: {exc}") from exc
        except BaseException:
            self.files.close()
            raise
        # The descriptor is the truth about the bytes; the configured size only labels them.
        self.capacity = self.chain.capacity
        if self.capacity != disk.capacity:
            log.warning(
                "%s: descriptor capacity %d differs from the configured %d",
                disk.label,
                self.capacity,
                disk.capacity,
            )

    def copy_to(
        self, target: DiskTarget, *, advance: Callable[[int], None], checksum: bool
    ) -> DiskCopyResult:
        writer: DiskWriter | None = None
        try:
            areas = self._allocated()
            if areas is not None:
                areas = coalesce(areas, self.transport.request_cost)
            writer = open_writer(
                target.fmt, target.directory, target.basename, self.capacity, uuid=target.uuid
            )
            runs = self.chain.runs() if areas is None else only_areas(self.chain.runs(), areas)
            # one stream per layer file rather than a request per run (vcbproxy.vmdk.readplan)
            runs, stream_of = planned(runs, self.files, self.transport.request_cost)
            result = copy_runs(
                runs, stream_of, writer, capacity=self.capacity, advance=advance, checksum=checksum
            )
            closing = time.monotonic()
            result.files = writer.close()
            result.sync_seconds = time.monotonic() - closing
            result.allocation_map = areas is not None
        except VmdkError as exc:
            if writer is not None:
                writer.abort()
            raise errors.TransportError(f"{self.label}: cannot read the disk: {exc}") from exc
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        return result

    def close(self) -> None:
        self.files.close()


def coalesce(areas, gap: int) -> list[tuple[int, int]]:
    """``areas`` with the holes between them shorter than ``gap`` bytes filled in: reading a
    short hole is cheaper than one more request (an SSH command costs ~140 ms to start)."""
    out: list[list[int]] = []
    for start, length in areas:
        if out and start - (out[-1][0] + out[-1][1]) < gap:
            out[-1][1] = start + length - out[-1][0]
        else:
            out.append([start, length])
    return [(start, length) for start, length in out]


def only_areas(runs, areas) -> Iterator:
    """``runs`` with every byte outside ``areas`` (sorted, non-overlapping ``(start, length)``)
    turned into zeros: the full-disk copy driven by an allocation map (see
    :class:`ChainDisk`), which reads only what the host says is allocated."""
    areas = iter(areas)
    area = next(areas, None)
    for run in runs:
        pos, end = run.offset, run.offset + run.length
        while pos < end:
            while area is not None and area[0] + area[1] <= pos:
                area = next(areas, None)
            if area is None or area[0] >= end:
                yield Run(pos, end - pos, None, 0)
                break
            if area[0] > pos:
                yield Run(pos, area[0] - pos, None, 0)
                pos = area[0]
            stop = min(end, area[0] + area[1])
            if run.source is None:
                yield Run(pos, stop - pos, None, 0)
            else:
                yield Run(pos, stop - pos, run.source, run.source_offset + (pos - run.offset))
            pos = stop
