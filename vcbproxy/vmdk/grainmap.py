"""Grain maps of sparse delta extents as runs, at C speed where the data allows.

vmfsSparse (COWD) and SEsparse deltas map a virtual disk in grains through a grain directory
and grain tables. Copying a disk needs, per range, maximal *runs*: grains that fall through to
the parent, grains that read as zeros, and grains whose data lies side by side in the file
(one ranged read each). A 1 GiB vmfsSparse delta has two million 512-byte grains, so the
tables are never walked entry by entry in Python: each table is turned into an array of
*targets* (0 = parent, 1 = zero, ``n >= 2`` = physical unit ``n``, consecutive units being
adjacent in the file), and runs are found with ``bytes`` searches (skipping unallocated
stretches) and array comparisons (extending a run of consecutive units).

Tables are read on first use and kept in a bounded cache, so memory stays flat however large
the disk, and a remote extent costs one ranged request per batch of adjacent tables.
"""

from __future__ import annotations

import re
import sys
from array import array
from collections import OrderedDict
from collections.abc import Iterator

from vcbproxy.vmdk import VmdkError

PARENT = 0
ZERO = 1
FIRST_UNIT = 2

_NONZERO = re.compile(rb"[^\x00]")
CACHE_TABLES = 256  # decoded grain tables kept per extent (a few MiB at most)
TABLE_BATCH = 64  # grain tables fetched in one ranged read when they lie side by side


def le_array(code: str, raw: bytes) -> array:
    """Little-endian unsigned integers as an array ("I" 32-bit, "Q" 64-bit)."""
    values = array(code, raw[: len(raw) // array(code).itemsize * array(code).itemsize])
    if sys.byteorder != "little":
        values.byteswap()
    return values


def _consecutive(targets: array, i: int, stop: int) -> int:
    """End of the run of ``targets[i:]`` that counts up by one from ``targets[i]`` (units
    side by side in the file), at most ``stop``; by galloping array comparisons."""
    first = targets[i]
    code = targets.typecode

    def holds(n: int) -> bool:
        return targets[i : i + n] == array(code, range(first, first + n))

    n = 1
    while i + 2 * n <= stop and holds(2 * n):
        n *= 2
    lo, hi = n, min(2 * n, stop - i)  # holds(lo); find the largest that holds in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if holds(mid):
            lo = mid
        else:
            hi = mid - 1
    return i + lo


def _constant(targets: array, i: int, stop: int) -> int:
    """End of the run of ``targets[i:]`` equal to ``targets[i]``, at most ``stop``."""
    value = targets[i]
    code = targets.typecode
    one = array(code, [value])

    def holds(n: int) -> bool:
        return targets[i : i + n] == one * n

    n = 1
    while i + 2 * n <= stop and holds(2 * n):
        n *= 2
    lo, hi = n, min(2 * n, stop - i)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if holds(mid):
            lo = mid
        else:
            hi = mid - 1
    return i + lo


def table_runs(targets: array, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
    """``(first, end, target of first)`` runs covering ``targets[start:stop]``."""
    raw = memoryview(targets).cast("B")
    size = targets.itemsize
    i = start
    while i < stop:
        t = targets[i]
        if t == PARENT:
            found = _NONZERO.search(raw, i * size, stop * size)
            end = stop if found is None else found.start() // size
        elif t == ZERO:
            end = _constant(targets, i, stop)
        else:
            end = _consecutive(targets, i, stop)
        yield i, end, t
        i = end


class GrainTableExtent:
    """A delta extent read through a grain directory and grain tables (subclasses: where the
    tables are and how an entry decodes to a target), answered as spans of runs."""

    capacity: int  # bytes
    grain_bytes: int
    gtes_per_gt: int
    table_bytes: int
    _gd: array  # the grain directory: 0 where a table is not allocated

    def __init__(self, ra, name: str):
        self._ra = ra
        self.name = name
        self._cache: OrderedDict[int, array | None] = OrderedDict()

    # -- what subclasses tell ------------------------------------------------------------

    def _table_offset(self, index: int) -> int | None:
        """Byte offset of grain table ``index`` in the file, None if not allocated."""
        raise NotImplementedError

    def _decode(self, raw: bytes) -> array:
        """A grain table's bytes as targets (see the module docstring)."""
        raise NotImplementedError

    def _unit_offset(self, target: int) -> int:
        """Byte offset in the file of the grain a target names."""
        raise NotImplementedError

    # -- tables --------------------------------------------------------------------------

    @property
    def num_tables(self) -> int:
        grains = -(-self.capacity // self.grain_bytes)
        return -(-grains // self.gtes_per_gt)

    def _next_table(self, index: int) -> int:
        """The first allocated grain table from ``index`` on (``num_tables`` if none)."""
        gd = self._gd
        raw = memoryview(gd).cast("B")
        found = _NONZERO.search(raw, index * gd.itemsize)
        return self.num_tables if found is None else found.start() // gd.itemsize

    def _targets(self, index: int) -> array | None:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        where = self._table_offset(index)
        if where is None:
            return None
        # Tables that follow this one in the file come in the same ranged read: a remote
        # extent pays a round trip per request, and a scan needs them next.
        count = 1
        while (
            count < TABLE_BATCH
            and index + count < self.num_tables
            and index + count not in self._cache
            and self._table_offset(index + count) == where + count * self.table_bytes
        ):
            count += 1
        raw = self._ra.pread(where, count * self.table_bytes)
        if len(raw) < self.table_bytes:
            raise VmdkError(f"{self.name}: grain table {index} lies beyond the end of the file")
        for k in range(count):
            piece = raw[k * self.table_bytes : (k + 1) * self.table_bytes]
            if len(piece) == self.table_bytes:
                self._remember(index + k, self._decode(piece))
        return self._cache[index]

    def _remember(self, index: int, targets: array) -> None:
        self._cache[index] = targets
        self._cache.move_to_end(index)
        while len(self._cache) > CACHE_TABLES:
            self._cache.popitem(last=False)

    # -- runs ----------------------------------------------------------------------------

    def spans(self, lo: int, hi: int) -> Iterator[tuple[int, int, int | None]]:
        """``(start, stop, where)`` covering ``[lo, hi)`` of the extent: ``where`` None for
        bytes that fall through to the parent, 0 for bytes that read as zeros, else the byte
        offset in the file of ``start`` (the span's bytes lie side by side from there)."""
        if lo < 0 or hi > self.capacity or lo > hi:
            raise VmdkError(f"{self.name}: range {lo}-{hi} outside the extent ({self.capacity})")
        gb, per = self.grain_bytes, self.gtes_per_gt
        pos = lo
        while pos < hi:
            t = pos // gb // per
            table_start = t * per * gb
            table_end = min(hi, table_start + per * gb)
            targets = self._targets(t)
            if targets is None:
                # skip every table not allocated from here on in one search of the directory
                end = min(hi, self._next_table(t + 1) * per * gb)
                yield pos, end, None
                pos = end
                continue
            first = (pos - table_start) // gb
            stop = -(-(table_end - table_start) // gb)
            for a, b, target in table_runs(targets, first, stop):
                start = max(pos, table_start + a * gb)
                end = min(table_end, table_start + b * gb)
                if target == PARENT:
                    yield start, end, None
                elif target == ZERO:
                    yield start, end, 0
                else:
                    yield start, end, self._unit_offset(target) + start - (table_start + a * gb)
            pos = table_end
