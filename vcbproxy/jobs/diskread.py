"""Reading a disk as it was at a snapshot, through any transport.

Shared by the full export and the CBT backup: open the snapshot's top descriptor,
follow the chain down to the base, and hand out ranged streams of the layer files.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Iterator

from vcbproxy.models import DatastorePath, DiskInfo
from vcbproxy.vmdk.io import OpenFiles


class LayerFiles(OpenFiles):
    """The layer files of one disk, each opened once through the transport.

    Called as ``stream_of(name, offset, length)`` it yields the bytes of a range of one
    layer file; ``open(name)`` hands out the file itself, for copiers that use a
    transport's extensions (holes, kernel copies; see ``vcbproxy.transport.base``).
    """

    def __call__(self, name: str, offset: int, length: int):
        return self.open(name).stream(offset, length)


@contextlib.contextmanager
def disk_chain(transport, disk: DiskInfo):
    """Yield ``(chain, stream_of)`` for ``disk``: a :class:`LayerFiles`; every file opened is
    closed afterwards."""
    from vcbproxy.vmdk.chain import DiskChain

    top = disk.top.descriptor.location
    files = LayerFiles(
        transport.opener(directory=DatastorePath(top.datastore, posixpath.dirname(top.path)))
    )
    try:
        chain = DiskChain.open(posixpath.basename(top.path), files.open)
        yield chain, files
    finally:
        files.close()


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
    ``vcbproxy.jobs.export``), which reads only what the host says is allocated."""
    from vcbproxy.vmdk.chain import Run

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
