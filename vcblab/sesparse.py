"""SEsparse delta extents (``NAME-00000N-sesparse.vmdk``) as ESXi writes them on VMFS6 (and
on VMFS5 for disks of 2 TB and more).

VMware has not published this format. What the lab writes comes from the facts others
published and read it by: qemu's read-only support (block/vmdk.c, "SESPARSE", whose author
posted the layout ESXi's hostd logs for a new snapshot: header <0:1>, volatile header <1:1>,
journal header <2:2>, journal <2048:2048>, grain directory <4096:2048>, grain tables
<6144:2048>, free bitmap <8192:2048>, backmap <10240:2048>, grains <12288:capacity>, in
sectors), dissect.hypervisor and Xen Orchestra's VMware import. qemu-img and
dissect.hypervisor read what this module writes; vcbproxy's reader is not consulted::

    constant header  magic 0xcafebabe, version 0x0000000200000001, capacity (sectors),
                     grainSize 8 (4 KiB), grainTableSize 64 (sectors: 4096 entries), flags 0,
                     four reserved words 0, then <offset, size> in sectors of the volatile
                     header, journal header, journal, grain directory, grain tables, free
                     bitmap, backmap and grains; zero padding to 512 bytes
    volatile header  magic 0xcafecafe, freeGTNumber, nextTxnSeqNumber, replayJournal 0
    grain directory  uint64 per 16 MiB of disk: 0 = no table, else 0x1000000000000000 |
                     the index of its table in the grain tables region (tables are handed
                     out in the order the guest first writes into their 16 MiB)
    grain table      uint64 per 4 KiB grain; the top nibble is the grain's type:
                     0 not allocated (read the parent), 1 unmapped, 2 zero,
                     3 allocated: the grain's index in the grains region, its low 12 bits
                     in bits 48-59 and the rest in bits 0-47

Each region after the headers starts on a 1 MiB boundary, as in the hostd layout above.
The lab never crashes mid-write, so its journal is always empty (replayJournal 0). Which
exact values ESXi keeps in the free bitmap and backmap is not published: the lab sets a bit
per grain slot in use and records, per slot, the virtual grain it holds. Unmapped grains
(type 1) are never written: qemu and Xen Orchestra read them as zeros, dissect.hypervisor
reads the parent; the lab writes zero grains (type 2), on which all three agree.
"""

from __future__ import annotations

import os
import struct
from array import array
from pathlib import Path

from vcblab.grains import DATA, PARENT, SECTOR, ZERO, GrainExtent, le_array, le_bytes, pread, pwrite

CONST_MAGIC = 0xCAFEBABE
VOLATILE_MAGIC = 0xCAFECAFE
VERSION = 0x0000000200000001
GRAIN_SECTORS = 8
GT_SECTORS = 64
GTES_PER_GT = GT_SECTORS * SECTOR // 8
REGION_ALIGN = 2048  # sectors (1 MiB)

GD_ALLOCATED = 0x1000000000000000
TYPE_MASK = 0xF000000000000000
TYPE_UNALLOCATED = 0x0000000000000000
TYPE_UNMAPPED = 0x1000000000000000
TYPE_ZERO = 0x2000000000000000
TYPE_ALLOCATED = 0x3000000000000000

# The constant header: 26 uint64 then 304 bytes of padding (512 in all).
_CONST = struct.Struct("<26Q304x")
_VOLATILE = struct.Struct("<4Q480x")
REGIONS = ("volatile", "journal_header", "journal", "gd", "gts", "free_bitmap", "backmap", "grains")


class SesparseError(ValueError):
    """A file that is not an SEsparse extent this module can handle."""


def _align(sectors: int) -> int:
    return max(REGION_ALIGN, -(-sectors // REGION_ALIGN) * REGION_ALIGN)


def layout(capacity_sectors: int) -> dict[str, tuple[int, int]]:
    """``{region: (offset, size)}`` in sectors for a new extent of that capacity."""
    grains = -(-capacity_sectors // GRAIN_SECTORS)
    tables = -(-grains // GTES_PER_GT)
    out = {"volatile": (1, 1), "journal_header": (2, 2)}
    pos = REGION_ALIGN
    sizes = {
        "journal": REGION_ALIGN,
        "gd": _align(-(-tables * 8 // SECTOR)),
        "gts": _align(tables * GT_SECTORS),
        "free_bitmap": _align(-(-grains // 8 // SECTOR)),
        "backmap": _align(-(-grains * 8 // SECTOR)),
        "grains": grains * GRAIN_SECTORS,
    }
    for name, size in sizes.items():
        out[name] = (pos, size)
        pos += size
    return out


def allocated_entry(index: int) -> int:
    """The grain table entry of an allocated grain stored at slot ``index``."""
    return TYPE_ALLOCATED | ((index & 0xFFF) << 48) | (index >> 12)


def entry_index(entry: int) -> int:
    return ((entry & 0x0FFF000000000000) >> 48) | ((entry & 0x0000FFFFFFFFFFFF) << 12)


class SesparseExtent(GrainExtent):
    """An SEsparse extent file, opened for reading or (``writable``) for guest writes."""

    gtes_per_gt = GTES_PER_GT

    def __init__(self, path: Path, fd: int, capacity_sectors: int, regions, writable: bool):
        self.path = path
        self.fd = fd
        self.writable = writable
        self.capacity = capacity_sectors * SECTOR
        self.grain_bytes = GRAIN_SECTORS * SECTOR
        self.regions = regions
        gd_off, gd_size = regions["gd"]
        tables = -(-self.num_grains // GTES_PER_GT)
        if tables * 8 > gd_size * SECTOR:
            raise SesparseError(f"{path.name}: grain directory too small for the capacity")
        self._gd = le_array("Q", pread(fd, gd_off * SECTOR, tables * 8))
        if len(self._gd) != tables:
            raise SesparseError(f"{path.name}: grain directory is truncated")
        self._tables: dict[int, array] = {}
        self._dirty: set[int] = set()
        self._gd_dirty = False
        # slots in use: tables in the tables region, grains in the grains region
        self.tables_used = sum(1 for e in self._gd if e)
        self._bitmap = bytearray()
        self.grains_used = 0
        if writable:
            # the free bitmap says which grain slots are taken; new grains go after the last
            bm_off, _ = regions["free_bitmap"]
            self._bitmap = bytearray(pread(fd, bm_off * SECTOR, -(-self.num_grains // 8)))
            self._bitmap.extend(bytes(-(-self.num_grains // 8) - len(self._bitmap)))
            last = len(self._bitmap.rstrip(b"\0"))
            if last:
                self.grains_used = (last - 1) * 8 + self._bitmap[last - 1].bit_length()
        self._bitmap_dirty = False

    # -- files -----------------------------------------------------------------------

    @classmethod
    def create(cls, path, capacity: int) -> SesparseExtent:
        if capacity <= 0 or capacity % SECTOR:
            raise SesparseError(f"capacity {capacity} is not a positive multiple of {SECTOR}")
        sectors = capacity // SECTOR
        regions = layout(sectors)
        path = Path(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            fields = [CONST_MAGIC, VERSION, sectors, GRAIN_SECTORS, GT_SECTORS, 0, 0, 0, 0, 0]
            for name in REGIONS:
                fields += regions[name]
            pwrite(fd, 0, _CONST.pack(*fields))
            pwrite(fd, regions["volatile"][0] * SECTOR, _VOLATILE.pack(VOLATILE_MAGIC, 0, 0, 0))
            # Journal header, journal, directory, tables, bitmap, backmap: zeros (holes) until
            # used; the file spans every region as ESXi's does.
            end = regions["grains"][0] * SECTOR
            os.ftruncate(fd, end)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, sectors, regions, writable=True)

    @classmethod
    def open(cls, path, writable: bool = False) -> SesparseExtent:
        path = Path(path)
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            raw = pread(fd, 0, SECTOR)
            if len(raw) < SECTOR:
                raise SesparseError(f"{path.name}: too short for an SEsparse header")
            f = _CONST.unpack(raw)
            if f[0] != CONST_MAGIC or f[1] != VERSION:
                raise SesparseError(f"{path.name}: not an SEsparse 2.1 constant header")
            if f[3] != GRAIN_SECTORS or f[4] != GT_SECTORS or any(f[5:10]):
                raise SesparseError(f"{path.name}: grain size, table size or flags not ESXi's")
            regions = {name: (f[10 + 2 * i], f[11 + 2 * i]) for i, name in enumerate(REGIONS)}
            vol = _VOLATILE.unpack(pread(fd, regions["volatile"][0] * SECTOR, SECTOR))
            if vol[0] != VOLATILE_MAGIC or vol[3]:
                raise SesparseError(f"{path.name}: bad volatile header or a journal to replay")
            return cls(path, fd, f[2], regions, writable)
        except BaseException:
            os.close(fd)
            raise

    # -- grains ----------------------------------------------------------------------

    def table(self, index: int):
        gt = self._tables.get(index)
        if gt is None:
            entry = self._gd[index]
            if not entry:
                return None
            if entry & 0xFFFFFFFF00000000 != GD_ALLOCATED:
                raise SesparseError(f"{self.path.name}: grain directory entry {entry:#x}")
            gt = le_array("Q", pread(self.fd, self._table_offset(entry), GTES_PER_GT * 8))
            if len(gt) != GTES_PER_GT:
                raise SesparseError(f"{self.path.name}: grain table {index} is truncated")
            self._tables[index] = gt
        return gt

    def _table_offset(self, gd_entry: int) -> int:
        return (self.regions["gts"][0] + (gd_entry & 0xFFFFFFFF) * GT_SECTORS) * SECTOR

    def decode(self, entry: int) -> tuple[int, int]:
        kind = entry & TYPE_MASK
        if kind == TYPE_UNALLOCATED:
            return PARENT, 0
        if kind in (TYPE_ZERO, TYPE_UNMAPPED):
            return ZERO, 0
        if kind == TYPE_ALLOCATED:
            slot = entry_index(entry)
            return DATA, (self.regions["grains"][0] + slot * GRAIN_SECTORS) * SECTOR
        raise SesparseError(f"{self.path.name}: grain table entry {entry:#x} has no known type")

    def write(self, offset: int, data: bytes) -> None:
        """Guest data at a 4 KiB-aligned ``offset``: allocated grains are overwritten in place;
        a new grain of zeros becomes a zero grain, other new grains take the next slots."""
        if not self.writable:
            raise SesparseError(f"{self.path.name} is open read-only")
        gb = self.grain_bytes
        if offset % gb or len(data) % gb or offset < 0 or offset + len(data) > self.capacity:
            raise SesparseError(f"write {offset}+{len(data)} is not grain-aligned in the disk")
        view = memoryview(data)
        pending: list[tuple[int, int]] = []  # (grain, data position) of new data grains
        for pos in range(0, len(view), gb):
            g = (offset + pos) // gb
            t, i = divmod(g, GTES_PER_GT)
            gt = self._table_for_write(t)
            state, where = self.decode(gt[i])
            piece = view[pos : pos + gb]
            if state == DATA:
                pwrite(self.fd, where, piece)
            elif not any(piece):
                gt[i] = TYPE_ZERO
                self._dirty.add(t)
            else:
                pending.append((g, pos))
        # new grains side by side in the grains region: one write per run
        run_start = 0
        for k in range(1, len(pending) + 1):
            if k < len(pending) and pending[k][1] == pending[k - 1][1] + gb:
                continue
            self._append(view[pending[run_start][1] : pending[k - 1][1] + gb], pending[run_start:k])
            run_start = k

    def _append(self, chunk, grains: list[tuple[int, int]]) -> None:
        """New grains ``grains`` (their data side by side in ``chunk``) into the next slots;
        their free bitmap bits are set and the backmap names the virtual grain of each."""
        first = self.grains_used
        grains_off = self.regions["grains"][0] * SECTOR
        pwrite(self.fd, grains_off + first * self.grain_bytes, chunk)
        for n, (g, _) in enumerate(grains):
            t, i = divmod(g, GTES_PER_GT)
            self._tables[t][i] = allocated_entry(first + n)
            self._dirty.add(t)
            slot = first + n
            self._bitmap[slot // 8] |= 1 << (slot % 8)
        backmap = struct.pack(f"<{len(grains)}Q", *(g for g, _ in grains))
        pwrite(self.fd, self.regions["backmap"][0] * SECTOR + first * 8, backmap)
        self.grains_used += len(grains)
        self._bitmap_dirty = True

    def _table_for_write(self, index: int) -> array:
        gt = self.table(index)
        if gt is None:
            self._gd[index] = GD_ALLOCATED | self.tables_used
            self.tables_used += 1
            self._gd_dirty = True
            gt = array("Q", bytes(GTES_PER_GT * 8))
            self._tables[index] = gt
            self._dirty.add(index)
        return gt

    def sync(self) -> None:
        """:meth:`flush`, then fsync."""
        if self.writable:
            self.flush()
            os.fsync(self.fd)

    def flush(self) -> None:
        """Changed grain tables, directory, free bitmap and volatile header: the file says
        what was written (a reader opening it now sees every write)."""
        if not self.writable:
            return
        for index in sorted(self._dirty):
            pwrite(self.fd, self._table_offset(self._gd[index]), le_bytes(self._tables[index]))
        self._dirty.clear()
        if self._gd_dirty:
            pwrite(self.fd, self.regions["gd"][0] * SECTOR, le_bytes(self._gd))
            self._gd_dirty = False
        if self._bitmap_dirty:
            pwrite(self.fd, self.regions["free_bitmap"][0] * SECTOR, bytes(self._bitmap))
            self._bitmap_dirty = False
        volatile = _VOLATILE.pack(VOLATILE_MAGIC, self.tables_used, 0, 0)
        pwrite(self.fd, self.regions["volatile"][0] * SECTOR, volatile)

    def close(self) -> None:
        if self.fd >= 0:
            try:
                self.sync()
            finally:
                os.close(self.fd)
                self.fd = -1

    def __enter__(self) -> SesparseExtent:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
