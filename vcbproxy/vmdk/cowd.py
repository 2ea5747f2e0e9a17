"""vmfsSparse delta extents (``-delta.vmdk``, magic ``COWD``): ESXi's snapshot deltas on VMFS5
and NFS for disks under 2 TB.

Read from VMware's "Virtual Disk Format" technical note, section "ESX Server Sparse
Extents": a 2048-byte ``COWDisk_Header`` (magic "COWD", version 1, flags, numSectors,
grainSize in sectors, gdOffset, numGDEntries, freeSector, ...), a grain directory of
numGDEntries little-endian uint32 sector numbers of grain tables (0: none yet), and grain
tables of 4096 uint32 entries, each the sector of a grain's data or 0 (not in this delta:
read the parent). ESXi's grains are one sector: a 1 GiB delta maps two million grains, so
runs are found table by table (``vcbproxy.vmdk.grainmap``), never grain by grain.
"""

from __future__ import annotations

import struct
from array import array

from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.grainmap import FIRST_UNIT, GrainTableExtent, le_array

MAGIC = b"COWD"
SECTOR = 512
GTES_PER_GT = 4096
_HEAD = struct.Struct(
    "<4s7I"
)  # magic, version, flags, numSectors, grainSize, gdOffset, numGDEntries, freeSector


class CowdExtent(GrainTableExtent):
    """A vmfsSparse extent, read through any RandomAccess (local file, HTTP, SSH)."""

    gtes_per_gt = GTES_PER_GT
    table_bytes = GTES_PER_GT * 4

    def __init__(self, ra, name: str, head: bytes = b""):
        super().__init__(ra, name)
        raw = head if len(head) >= _HEAD.size else ra.pread(0, _HEAD.size)
        raw = raw[: _HEAD.size]
        if len(raw) < _HEAD.size:
            raise VmdkError(f"{name}: too short for a vmfsSparse (COWD) header")
        magic, version, _flags, sectors, grain, gd, entries, _free = _HEAD.unpack(raw)
        if magic != MAGIC:
            raise VmdkError(f"{name}: not a vmfsSparse extent (no COWD magic)")
        if version != 1:
            # version 3 is VMware Workstation 3's COWD, with 512-entry tables: not ESXi's
            raise VmdkError(f"{name}: COWD version {version} is not ESXi's vmfsSparse (1)")
        if grain < 1 or grain & (grain - 1):
            raise VmdkError(f"{name}: grain size {grain} sectors is not a power of two")
        self.capacity = sectors * SECTOR
        self.grain_bytes = grain * SECTOR
        if entries < self.num_tables:
            raise VmdkError(
                f"{name}: {entries} grain directory entries cannot map {sectors} sectors"
            )
        self._grain_sectors = grain
        self._gd = le_array("I", ra.pread(gd * SECTOR, self.num_tables * 4))
        if len(self._gd) != self.num_tables:
            raise VmdkError(f"{name}: the grain directory lies beyond the end of the file")

    @classmethod
    def from_reader(cls, ra, name: str = "vmfsSparse extent", head: bytes = b"") -> CowdExtent:
        """``head``: the file's first bytes if the caller has read them already."""
        return cls(ra, name, head)

    def _table_offset(self, index: int) -> int | None:
        sector = self._gd[index]
        return sector * SECTOR if sector else None

    def _decode(self, raw: bytes) -> array:
        entries = le_array("I", raw)
        if self._grain_sectors == 1:
            # one-sector grains: an entry (a sector number) is its own target; sectors 0-3
            # hold the header, so 1 never names data and cannot be mistaken for "zero"
            if 1 in entries:
                raise VmdkError(f"{self.name}: a grain table points into the header")
            return entries
        out = array("Q", bytes(8 * len(entries)))
        for i, sector in enumerate(entries):
            if sector:
                if sector % self._grain_sectors:
                    raise VmdkError(f"{self.name}: grain at sector {sector} is not aligned")
                out[i] = sector // self._grain_sectors + FIRST_UNIT
        return out

    def _unit_offset(self, target: int) -> int:
        if self._grain_sectors == 1:
            return target * SECTOR
        return (target - FIRST_UNIT) * self.grain_bytes
