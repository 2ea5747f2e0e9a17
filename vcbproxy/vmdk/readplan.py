"""Reading a disk's runs with few requests: one stream per layer file, not one per run.

A disk with snapshots maps to many short runs that alternate between its layers (a
delta's grain here, the base there). Read one ranged request per run, a remote transport
pays a round trip for each (an SSH command, ~140 ms, for each). :class:`ReadPlan` looks
ahead in the run list and, per layer file, joins the ranges the next runs need into one
ranged stream when the gaps between them are shorter than what a request costs
(``gap``): the gap bytes are read through and dropped, which is cheaper than another
request. Runs are still served in disk order, each from its file's open stream, so the
copier, the hash and the writers see exactly what they saw before.

Look-ahead is bounded (``LOOKAHEAD_RUNS``, ``MAX_STREAM``): memory holds run records, never
data beyond one transport chunk per open stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator

from vcbproxy.vmdk import VmdkError

LOOKAHEAD_RUNS = 4096
MAX_STREAM = 1 << 30  # one ranged request covers at most this much of a file


class _Stream:
    """A forward-only ranged read of one file: ``[position, end)`` still to come."""

    def __init__(self, chunks: Iterator[bytes], start: int, end: int):
        self._chunks = chunks
        self.position = start
        self.end = end
        self._chunk = b""  # the chunk _buffer is a view of
        self._buffer = memoryview(b"")

    def take(self, offset: int, length: int) -> Iterator[bytes]:
        """``length`` bytes at ``offset`` (>= position): the bytes before it are dropped."""
        if offset < self.position or offset + length > self.end:
            raise VmdkError(f"range {offset}+{length} is not ahead in this stream")
        self._drop(offset - self.position)
        while length > 0:
            piece = self._next(length)
            length -= len(piece)
            yield piece

    def _drop(self, n: int) -> None:
        while n > 0:
            n -= len(self._next(n))

    def _next(self, most: int) -> bytes:
        if not self._buffer:
            chunk = next(self._chunks, b"")
            if not chunk:
                raise VmdkError(f"the file ended at {self.position}, before {self.end}")
            self._chunk, self._buffer = chunk, memoryview(chunk)
        piece = self._buffer[:most]
        self._buffer = self._buffer[len(piece) :]
        self.position += len(piece)
        # the chunk itself when the piece is all of it (chunks are bytes): no copy
        return piece.tobytes() if piece.nbytes != len(self._chunk) else self._chunk

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class ReadPlan:
    """Serves ``stream_of(name, offset, length)`` for the runs that :meth:`runs` hands out.

    ``files`` opens a name (``LayerFiles`` of ``vcbproxy.transport.chain``); it is also what
    ``open`` returns, so copiers that use a source's own extensions (holes, kernel copies)
    keep working. Runs must be asked for in the order :meth:`runs` yields them.
    """

    def __init__(self, files, gap: int):
        self._files = files
        self.gap = gap
        self._ahead: deque = deque()
        self._source: Iterator | None = None
        self._streams: dict[str, _Stream] = {}
        self.open: Callable = files.open

    def runs(self, runs: Iterable) -> Iterator:
        """``runs`` as they come, read ahead far enough to plan each file's next stream."""
        self._source = iter(runs)
        try:
            while True:
                if not self._ahead and not self._fill(1):
                    return
                yield self._ahead.popleft()
        finally:
            self.close()

    def _fill(self, n: int) -> bool:
        """Read ahead until ``n`` runs wait; False if the runs end before that."""
        while len(self._ahead) < n:
            run = next(self._source, None) if self._source is not None else None
            if run is None:
                return False
            self._ahead.append(run)
        return True

    def __call__(self, name: str, offset: int, length: int) -> Iterator[bytes]:
        stream = self._streams.get(name)
        if stream is None or not (stream.position <= offset and offset + length <= stream.end):
            if stream is not None:
                stream.close()
            stream = self._streams[name] = self._plan(name, offset, length)
        return stream.take(offset, length)

    def _plan(self, name: str, offset: int, length: int) -> _Stream:
        """A stream of ``name`` from ``offset`` that also covers the next runs of that file
        whose ranges follow within ``gap`` bytes."""
        end = offset + length
        seen = 0
        while True:
            if seen >= len(self._ahead) and (seen >= LOOKAHEAD_RUNS or not self._fill(seen + 1)):
                break
            run = self._ahead[seen]
            seen += 1
            if run.source != name:
                continue
            if run.source_offset < end or run.source_offset - end > self.gap:
                break  # behind us (read again later) or too far: its own stream then
            if run.source_offset + run.length - offset > MAX_STREAM:
                break
            end = run.source_offset + run.length
        return _Stream(self._files.open(name).stream(offset, end - offset), offset, end)

    def close(self) -> None:
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream.close()


def planned(runs: Iterable, files, gap: int):
    """``(runs, stream_of)`` for a copier: through a :class:`ReadPlan` when a request costs
    something (``gap`` > 0), else the runs and ``files`` as they are (local files)."""
    if gap <= 0:
        return runs, files
    plan = ReadPlan(files, gap)
    return plan.runs(runs), plan
