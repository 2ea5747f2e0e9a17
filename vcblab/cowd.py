"""vmfsSparse delta extents (``NAME-00000N-delta.vmdk``, magic ``COWD``) as ESXi writes them
on VMFS5 for disks under 2 TB.

Written from VMware's "Virtual Disk Format" technical note, section "ESX Server Sparse
Extents" (the ``COWDisk_Header`` structure), and checked by qemu-img (block/vmdk.c reads
them as "VMFSSPARSE") and dissect.hypervisor, never by vcbproxy's own reader::

    sector 0-3   COWDisk_Header, 2048 bytes: magic "COWD", version 1, flags 3, numSectors,
                 grainSize 1 (one 512-byte sector), gdOffset 4, numGDEntries, freeSector,
                 the child's parent file name, generation, name, description,
                 savedGeneration, uncleanShutdown, padding
    sector 4...  grain directory: numGDEntries little-endian uint32 sector numbers of grain
                 tables, 0 while a table is not allocated
    then         grain tables (4096 uint32 entries, 16 KiB each) and grains, both allocated
                 at freeSector in the order the guest first writes to them; an entry is the
                 sector of the grain's data, 0 = not allocated (read the parent)

The format has no zero grain: a guest writing zeros gets a grain holding zeros.
"""

from __future__ import annotations

import os
import struct
from array import array
from pathlib import Path

from vcblab.grains import DATA, PARENT, SECTOR, GrainExtent, le_array, le_bytes, pread, pwrite

MAGIC = b"COWD"
VERSION = 1
FLAGS = 3
GRAIN_SECTORS = 1
GTES_PER_GT = 4096
GD_OFFSET = 4  # sectors: the header takes 2048 bytes
HEADER_SIZE = 2048
MAX_PARENT_NAME = 1024
MAX_NAME = 60
MAX_DESCRIPTION = 512

# magic, version, flags, numSectors, grainSize, gdOffset, numGDEntries, freeSector
_HEAD = struct.Struct("<4s7I")
# u.child: parentFileName[1024], parentGeneration (the union's larger member)
_CHILD = struct.Struct(f"<{MAX_PARENT_NAME}sI")
# generation, name[60], description[512], savedGeneration, reserved[8], uncleanShutdown
_TAIL = struct.Struct(f"<I{MAX_NAME}s{MAX_DESCRIPTION}sI8sI")
assert _HEAD.size + _CHILD.size + _TAIL.size + 396 == HEADER_SIZE


class CowdError(ValueError):
    """A file that is not a vmfsSparse extent this module can handle."""


def gd_entries(capacity_sectors: int) -> int:
    return -(-capacity_sectors // (GTES_PER_GT * GRAIN_SECTORS))


class CowdExtent(GrainExtent):
    """A vmfsSparse extent file, opened for reading or (``writable``) for guest writes."""

    gtes_per_gt = GTES_PER_GT

    def __init__(self, path: Path, fd: int, header: dict, writable: bool):
        self.path = path
        self.fd = fd
        self.writable = writable
        self.capacity = header["sectors"] * SECTOR
        self.grain_bytes = header["grain"] * SECTOR
        self.free_sector = header["free"]
        self.parent_name = header["parent"]
        self._gd = le_array("I", pread(fd, header["gd"] * SECTOR, header["gd_entries"] * 4))
        if len(self._gd) != header["gd_entries"]:
            raise CowdError(f"{path.name}: grain directory is truncated")
        self._tables: dict[int, array] = {}
        self._dirty: set[int] = set()
        self._gd_dirty = False
        self._gd_offset = header["gd"]

    # -- files -----------------------------------------------------------------------

    @classmethod
    def create(cls, path, capacity: int, parent_name: str = "") -> CowdExtent:
        """An empty delta of ``capacity`` bytes (a multiple of 512) over ``parent_name``."""
        if capacity <= 0 or capacity % SECTOR:
            raise CowdError(f"capacity {capacity} is not a positive multiple of {SECTOR}")
        sectors = capacity // SECTOR
        if sectors >= 1 << 32:
            raise CowdError("vmfsSparse extents hold less than 2 TiB; use seSparse")
        path = Path(path)
        entries = gd_entries(sectors)
        gd_sectors = -(-entries * 4 // SECTOR)
        header = {
            "sectors": sectors,
            "grain": GRAIN_SECTORS,
            "gd": GD_OFFSET,
            "gd_entries": entries,
            "free": GD_OFFSET + gd_sectors,
            "parent": parent_name,
        }
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            pwrite(fd, 0, _pack_header(header))
            os.ftruncate(fd, header["free"] * SECTOR)  # the grain directory: all zeros
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, header, writable=True)

    @classmethod
    def open(cls, path, writable: bool = False) -> CowdExtent:
        path = Path(path)
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            header = _unpack_header(pread(fd, 0, HEADER_SIZE), path.name)
            return cls(path, fd, header, writable)
        except BaseException:
            os.close(fd)
            raise

    # -- grains ----------------------------------------------------------------------

    def table(self, index: int):
        gt = self._tables.get(index)
        if gt is None:
            sector = self._gd[index]
            if not sector:
                return None
            gt = le_array("I", pread(self.fd, sector * SECTOR, GTES_PER_GT * 4))
            if len(gt) != GTES_PER_GT:
                raise CowdError(f"{self.path.name}: grain table {index} is truncated")
            self._tables[index] = gt
        return gt

    def decode(self, entry: int) -> tuple[int, int]:
        return (DATA, entry * SECTOR) if entry else (PARENT, 0)

    def write(self, offset: int, data: bytes) -> None:
        """Guest data at a grain-aligned ``offset``: allocated grains are overwritten in
        place, new ones appended at freeSector (a write's new grains lie side by side)."""
        if not self.writable:
            raise CowdError(f"{self.path.name} is open read-only")
        gb = self.grain_bytes
        if offset % gb or len(data) % gb or offset < 0 or offset + len(data) > self.capacity:
            raise CowdError(f"write {offset}+{len(data)} is not grain-aligned inside the disk")
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            g = (offset + pos) // gb
            t, i = divmod(g, GTES_PER_GT)
            gt = self._table_for_write(t)
            # the run of grains of this write inside this table with the same fate
            stop = min(len(view), pos + (GTES_PER_GT - i) * gb)
            allocated = bool(gt[i])
            end = pos + gb
            while end < stop and bool(gt[i + (end - pos) // gb]) == allocated:
                if allocated and gt[i + (end - pos) // gb] != gt[i] + (end - pos) // SECTOR:
                    break  # allocated, but not next in the file: another write
                end += gb
            if allocated:
                pwrite(self.fd, gt[i] * SECTOR, view[pos:end])
            else:
                start = self.free_sector
                pwrite(self.fd, start * SECTOR, view[pos:end])
                for k in range((end - pos) // gb):
                    gt[i + k] = start + k * GRAIN_SECTORS
                self.free_sector = start + (end - pos) // SECTOR
                self._dirty.add(t)
            pos = end

    def _table_for_write(self, index: int) -> array:
        gt = self.table(index)
        if gt is None:
            # a new grain table, zeroed, at freeSector; the directory points at it
            sector = self.free_sector
            gt = array("I", bytes(GTES_PER_GT * 4))
            pwrite(self.fd, sector * SECTOR, bytes(GTES_PER_GT * 4))
            self.free_sector += GTES_PER_GT * 4 // SECTOR
            self._gd[index] = sector
            self._gd_dirty = True
            self._tables[index] = gt
            self._dirty.add(index)
        return gt

    def sync(self) -> None:
        """:meth:`flush`, then fsync."""
        if self.writable:
            self.flush()
            os.fsync(self.fd)

    def flush(self) -> None:
        """Changed grain tables, then the directory, then the header's freeSector: the file
        says what was written (a reader opening it now sees every write)."""
        if not self.writable:
            return
        for index in sorted(self._dirty):
            pwrite(self.fd, self._gd[index] * SECTOR, le_bytes(self._tables[index]))
        self._dirty.clear()
        if self._gd_dirty:
            pwrite(self.fd, self._gd_offset * SECTOR, le_bytes(self._gd))
            self._gd_dirty = False
        pwrite(self.fd, 0, _HEAD.pack(*self._head_fields()))

    def _head_fields(self):
        return (
            MAGIC,
            VERSION,
            FLAGS,
            self.capacity // SECTOR,
            self.grain_bytes // SECTOR,
            self._gd_offset,
            len(self._gd),
            self.free_sector,
        )

    def close(self) -> None:
        if self.fd >= 0:
            try:
                self.sync()
            finally:
                os.close(self.fd)
                self.fd = -1

    def __enter__(self) -> CowdExtent:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pack_header(h: dict) -> bytes:
    head = _HEAD.pack(
        MAGIC, VERSION, FLAGS, h["sectors"], h["grain"], h["gd"], h["gd_entries"], h["free"]
    )
    child = _CHILD.pack(h["parent"].encode("utf-8")[: MAX_PARENT_NAME - 1], 0)
    tail = _TAIL.pack(0, b"", b"", 0, b"", 0)
    return (head + child + tail).ljust(HEADER_SIZE, b"\0")


def _unpack_header(raw: bytes, name: str) -> dict:
    if len(raw) < HEADER_SIZE:
        raise CowdError(f"{name}: too short for a COWD header")
    magic, version, _flags, sectors, grain, gd, entries, free = _HEAD.unpack_from(raw)
    if magic != MAGIC:
        raise CowdError(f"{name}: no COWD magic")
    if version != VERSION or grain != GRAIN_SECTORS:
        raise CowdError(f"{name}: COWD version {version}, grain {grain} sectors: not ESXi's")
    if entries != gd_entries(sectors):
        raise CowdError(f"{name}: {entries} grain directory entries for {sectors} sectors")
    parent, _gen = _CHILD.unpack_from(raw, _HEAD.size)
    return {
        "sectors": sectors,
        "grain": grain,
        "gd": gd,
        "gd_entries": entries,
        "free": free,
        "parent": parent.split(b"\0", 1)[0].decode("utf-8", "replace"),
    }
