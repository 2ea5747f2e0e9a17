"""SEsparse delta extents (``-sesparse.vmdk``): ESXi's snapshot deltas on VMFS6 and vSAN, and
on VMFS5 for disks of 2 TB and more.

VMware has not published the format; what is read here is what qemu (block/vmdk.c),
dissect.hypervisor and Xen Orchestra's VMware import agree on:

* a 512-byte constant header: magic 0xcafebabe, version 0x200000001, capacity, grain size
  and grain table size (sectors), flags (0), four reserved words, then ``<offset, size>`` in
  sectors of the volatile header, journal header, journal, grain directory, grain tables,
  free bitmap, backmap and grains;
* a volatile header: magic 0xcafecafe, ..., replayJournal (a journal left to replay means
  the file is not consistent without ESXi: refused);
* a grain directory of uint64: 0 = no table, else 0x10000000 in the top 32 bits and the
  table's index in the grain tables region below;
* grain tables of uint64 whose top nibble is the grain's type: 0 not allocated (read the
  parent), 1 unmapped and 2 zero (read as zeros; for 1, dissect.hypervisor reads the parent
  instead, qemu and Xen Orchestra zeros), 3 allocated, its index in the grains region split
  as low 12 bits in bits 48-59 and the rest in bits 0-47.
"""

from __future__ import annotations

import struct
from array import array

from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.grainmap import FIRST_UNIT, PARENT, ZERO, GrainTableExtent, le_array

SECTOR = 512
CONST_MAGIC = 0xCAFEBABE
VOLATILE_MAGIC = 0xCAFECAFE
VERSION = 0x0000000200000001
_CONST = struct.Struct("<26Q")
_VOLATILE = struct.Struct("<4Q")
GD_ALLOCATED = 0x10000000
INDEX_LOW = 0x0FFF000000000000
INDEX_HIGH = 0x0000FFFFFFFFFFFF


def is_sesparse(head: bytes) -> bool:
    """True if ``head`` (a file's first 8 bytes or more) starts an SEsparse extent."""
    return len(head) >= 8 and int.from_bytes(head[:8], "little") == CONST_MAGIC


class SesparseExtent(GrainTableExtent):
    """An SEsparse extent, read through any RandomAccess (local file, HTTP, SSH)."""

    def __init__(self, ra, name: str, head: bytes = b""):
        super().__init__(ra, name)
        raw = head if len(head) >= _CONST.size else ra.pread(0, _CONST.size)
        raw = raw[: _CONST.size]
        if len(raw) < _CONST.size:
            raise VmdkError(f"{name}: too short for an SEsparse header")
        f = _CONST.unpack(raw)
        magic, version, capacity, grain, table, flags = f[:6]
        if magic != CONST_MAGIC:
            raise VmdkError(f"{name}: not an SEsparse extent (constant header magic {magic:#x})")
        if version != VERSION:
            raise VmdkError(f"{name}: SEsparse version {version:#x} is not 2.1")
        if flags:
            raise VmdkError(f"{name}: SEsparse flags {flags:#x} are unknown")
        if grain < 1 or table < 1:
            raise VmdkError(f"{name}: grain size {grain} or table size {table} is 0")
        self.capacity = capacity * SECTOR
        self.grain_bytes = grain * SECTOR
        self.table_bytes = table * SECTOR
        self.gtes_per_gt = self.table_bytes // 8
        volatile_off = f[10]
        gd_off, gd_size = f[16], f[17]
        self._tables_off = f[18] * SECTOR
        self._grains_off = f[24] * SECTOR
        vol = ra.pread(volatile_off * SECTOR, _VOLATILE.size)
        if len(vol) < _VOLATILE.size or _VOLATILE.unpack(vol)[0] != VOLATILE_MAGIC:
            raise VmdkError(f"{name}: SEsparse volatile header is missing or damaged")
        if _VOLATILE.unpack(vol)[3]:
            raise VmdkError(
                f"{name}: the SEsparse journal must be replayed first (ESXi did not close "
                "the file cleanly); power the VM on and off or consolidate, then retry"
            )
        if self.num_tables * 8 > gd_size * SECTOR:
            raise VmdkError(f"{name}: the grain directory is too small for the capacity")
        self._gd = le_array("Q", ra.pread(gd_off * SECTOR, self.num_tables * 8))
        if len(self._gd) != self.num_tables:
            raise VmdkError(f"{name}: the grain directory lies beyond the end of the file")

    @classmethod
    def from_reader(cls, ra, name: str = "SEsparse extent", head: bytes = b"") -> SesparseExtent:
        """``head``: the file's first bytes if the caller has read them already."""
        return cls(ra, name, head)

    def _table_offset(self, index: int) -> int | None:
        entry = self._gd[index]
        if not entry:
            return None
        if entry >> 32 != GD_ALLOCATED:
            raise VmdkError(f"{self.name}: grain directory entry {index} is {entry:#x}")
        return self._tables_off + (entry & 0xFFFFFFFF) * self.table_bytes

    def _decode(self, raw: bytes) -> array:
        entries = le_array("Q", raw)
        out = array("Q", bytes(len(raw)))
        if not any(entries):
            return out
        for i, e in enumerate(entries):
            kind = e >> 60
            if kind == 3:
                out[i] = (((e & INDEX_LOW) >> 48) | ((e & INDEX_HIGH) << 12)) + FIRST_UNIT
            elif kind in (1, 2):
                out[i] = ZERO
            elif kind or e:
                raise VmdkError(f"{self.name}: grain table entry {e:#x} has no known type")
            else:
                out[i] = PARENT
        return out

    def _unit_offset(self, target: int) -> int:
        return self._grains_off + (target - FIRST_UNIT) * self.grain_bytes
