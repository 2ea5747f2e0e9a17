"""Reading a disk as it was at a snapshot, through any transport.

Shared by the full export and the CBT backup: open the snapshot's top descriptor,
follow the chain down to the base, and hand out ranged streams of the layer files.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Iterator

from vcbproxy.models import DatastorePath, DiskInfo


@contextlib.contextmanager
def disk_chain(transport, disk: DiskInfo):
    """Yield ``(chain, stream_of)`` for ``disk``; every file opened is closed afterwards.

    ``stream_of(name, offset, length)`` yields the bytes of a range of one layer file.
    """
    from vcbproxy.vmdk.chain import DiskChain

    top = disk.top.descriptor.location
    opener = transport.opener(directory=DatastorePath(top.datastore, posixpath.dirname(top.path)))
    opened: dict[str, object] = {}

    def open_cached(name: str):
        if name not in opened:
            opened[name] = opener(name)
        return opened[name]

    try:
        chain = DiskChain.open(posixpath.basename(top.path), open_cached)
        yield chain, lambda name, offset, length: open_cached(name).stream(offset, length)
    finally:
        for handle in opened.values():
            handle.close()


def read_areas(runs, stream_of, areas) -> Iterator[tuple[int, bytes | int]]:
    """The content of ``areas`` (sorted, non-overlapping ``(start, length)``), in order.

    Yields ``(offset, bytes)`` for data and ``(offset, n)`` for ``n`` bytes known to be zero
    (a hole in every layer): those are never fetched from the host.
    """
    runs = iter(runs)
    run = next(runs, None)
    for start, length in areas:
        pos, end = start, start + length
        while pos < end:
            while run is not None and run.offset + run.length <= pos:
                run = next(runs, None)
            if run is None or run.offset > pos:
                raise ValueError(f"the disk map does not cover offset {pos}")
            stop = min(end, run.offset + run.length)
            if run.source is None:
                yield pos, stop - pos
            else:
                offset = pos
                for chunk in stream_of(run.source, run.source_offset + (pos - run.offset), stop - pos):
                    yield offset, chunk
                    offset += len(chunk)
                if offset != stop:
                    raise ValueError(f"short read from {run.source} at {pos}")
            pos = stop
