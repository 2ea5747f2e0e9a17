"""One lab virtual disk: its real VMDK files, snapshot deltas, guest writes, CBT and an oracle.

Files in the disk's datastore directory (``b`` = basename)::

    b.vmdk                   descriptor, createType "vmfs", one FLAT extent (as ESXi keeps a
                             base disk); or "vmfsRawDeviceMap" / "vmfsPassthroughRawDeviceMap"
                             with a VMFSRDM extent for a raw device mapping
    b-flat.vmdk              the extent: a sparse host file, only data regions written
    b-rdm.vmdk, b-rdmp.vmdk  an RDM's mapping file: presents the LUN's bytes (a hard link to
                             the file standing in for the LUN)
    b-000001.vmdk ...        snapshot deltas as ESXi writes them on the disk's datastore: a
                             descriptor, createType "vmfsSparse" with a VMFSSPARSE extent
                             b-000001-delta.vmdk (vcblab.cowd), or "seSparse" with a SESPARSE
                             extent b-000001-sesparse.vmdk (vcblab.sesparse); its
                             parentFileNameHint and parentCID name the layer below
    b-ctk.vmdk               change tracking log (vcblab.cbt), only while tracking is on
    b.labjournal             the oracle's journal: every guest write, appended (lab-internal)
    b.labbase                raw copy of an uploaded disk's content at registration (lab-internal)

A layer uploaded as a hosted monolithicSparse file (qemu-img's default VMDK) is adopted and
written as it is; the lab itself only makes the ESXi formats.

The oracle answers "what did the disk hold at mark m" independently of the VMDK files: the
base content (regenerated from the seed, or ``b.labbase``) plus the journal's first m writes.
It survives snapshot merges because it never looks at layers, so a test can compare what a
backup read from the files against it. A mark is the journal's length at some moment; the
server stores one per disk per snapshot.

The server calls ``disk.cbt.advance()`` when it creates a snapshot (``add_delta`` only makes the
files), and keeps the change ID it returns for that snapshot.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import struct
import threading
import uuid as uuidlib
from pathlib import Path

from vcblab import content
from vcblab.cbt import BLOCK, ChangeTracker, InvalidChangeId, clip, window_end
from vcblab.cowd import CowdExtent
from vcblab.grains import DATA, PARENT, ZERO
from vcblab.sesparse import SesparseExtent
from vcbproxy.staging.manifest import hash_zeros
from vcbproxy.vmdk import VmdkError, descriptor
from vcbproxy.vmdk.sparse import SECTOR, SparseExtent, SparseHeader, is_zero

__all__ = ["LabDisk", "InvalidChangeId", "BLOCK", "DELTA_FORMATS"]

CHUNK = 1 << 20
STATE_VERSION = 2
# createType of a delta -> (extent type, extent file suffix, the lab's writer)
DELTA_FORMATS = {
    "vmfsSparse": ("VMFSSPARSE", "-delta.vmdk", CowdExtent),
    "seSparse": ("SESPARSE", "-sesparse.vmdk", SesparseExtent),
}
VMFSSPARSE_LIMIT = 2 << 40  # vmfsSparse maps sectors with 32-bit numbers: less than 2 TiB


def delta_format(datastore_kind: str, capacity: int) -> str:
    """The delta ESXi writes for a disk of ``capacity`` on a datastore of that kind.

    vSphere Storage guide, "Snapshot formats": VMFS6 uses SEsparse for every disk, VMFS5
    vmfsSparse below 2 TB and SEsparse from there. NFS is not in that table; ESXi writes
    vmfsSparse redo logs there as on VMFS5 (the lab's reading, noted in its README).
    """
    if datastore_kind not in ("vmfs5", "vmfs6", "nfs"):
        raise ValueError(f"datastore kind {datastore_kind!r} is not vmfs5, vmfs6 or nfs")
    if datastore_kind == "vmfs6" or capacity >= VMFSSPARSE_LIMIT:
        return "seSparse"
    return "vmfsSparse"


RDM_TYPES = {
    "vmfsRawDeviceMap": "-rdm.vmdk",
    "vmfsPassthroughRawDeviceMap": "-rdmp.vmdk",
}
_DELTA_RE = re.compile(r"^(?P<base>.+)-(?P<n>\d{6})\.vmdk$")


class _Journal:
    """Append-only record of guest writes: ``<QQB`` (offset, length, zero flag) then the data.

    The index (offset, length, data position or -1 for zeros) is rebuilt by a header scan on
    open; a torn last record (crash mid-append) is cut off.
    """

    REC = struct.Struct("<QQB")

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.entries: list[tuple[int, int, int]] = []
        size = os.fstat(self._fd).st_size
        pos = 0
        while pos + self.REC.size <= size:
            off, length, zero = self.REC.unpack(os.pread(self._fd, self.REC.size, pos))
            data_pos = pos + self.REC.size
            end = data_pos + (0 if zero else length)
            if end > size:
                break
            self.entries.append((off, length, -1 if zero else data_pos))
            pos = end
        if pos != size:
            os.ftruncate(self._fd, pos)
        self._size = pos

    def append(self, offset: int, data: bytes) -> None:
        zero = is_zero(data)
        record = self.REC.pack(offset, len(data), 1 if zero else 0)
        os.write(self._fd, record if zero else record + bytes(data))
        self.entries.append((offset, len(data), -1 if zero else self._size + self.REC.size))
        self._size += self.REC.size + (0 if zero else len(data))

    def data(self, pos: int, length: int) -> bytes:
        return bytes(length) if pos < 0 else os.pread(self._fd, length, pos)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LabDisk:
    """A virtual disk of the lab; every public method takes the disk's lock (thread-safe)."""

    def __init__(
        self,
        directory: Path,
        basename: str,
        capacity: int,
        uuid: str,
        layers: list[str],
        *,
        seed: int | None,
        fill: float,
        base_ranges: list[tuple[int, int]] | None,
        next_delta: int,
        delta_format: str = "seSparse",
    ):
        if delta_format not in DELTA_FORMATS:
            raise ValueError(
                f"delta format {delta_format!r} is not one ESXi writes: {sorted(DELTA_FORMATS)}"
            )
        self.delta_format = delta_format
        self.directory = Path(directory)
        self.basename = basename
        self.capacity = capacity
        self.uuid = uuid
        self.seed = seed
        self.fill = fill
        self._layers = list(layers)
        self._next_delta = next_delta
        self._lock = threading.RLock()
        if seed is not None:
            base_ranges = content.base_extents(capacity, seed, fill)
        self._base_ranges = [tuple(r) for r in base_ranges or []]
        self._journal = _Journal(self.directory / f"{basename}.labjournal")
        try:
            self.cbt = ChangeTracker(
                self.directory / f"{basename}-ctk.vmdk", mark_source=self.mark, lock=self._lock
            )
        except BaseException:
            self._journal.close()
            raise
        self._writer: _Layer | None = None  # open handle on the top layer
        self._extent_of: dict[str, str | None] = {}  # layer name -> its extent file, if any
        self._format_of: dict[str, str] = {}  # layer name -> its createType

    # -- construction ------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory,
        basename: str,
        capacity: int,
        *,
        seed: int,
        fill: float = 0.4,
        uuid: str | None = None,
        delta_format: str = "seSparse",
    ) -> LabDisk:
        """A new base disk holding the seed's content; any old files of that name are replaced.

        ``delta_format`` is the createType of the deltas its snapshots make (the datastore's:
        ``vmfsSparse`` on VMFS5 and NFS below 2 TB, ``seSparse`` on VMFS6 and for larger disks).
        """
        directory = Path(directory)
        if capacity <= 0 or capacity % SECTOR:
            raise ValueError(f"disk capacity {capacity} is not a positive multiple of 512")
        flat = f"{basename}-flat.vmdk"
        fd = os.open(directory / flat, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, capacity)  # a hole: unwritten regions cost nothing on the host
            for off, length in content.base_extents(capacity, seed, fill):
                for pos in range(off, off + length, CHUNK):
                    n = min(CHUNK, off + length - pos)
                    os.pwrite(fd, content.fill_bytes(seed, pos, n), pos)
        finally:
            os.close(fd)
        uuid = uuid or str(uuidlib.uuid4())
        desc = descriptor.new_descriptor(
            "vmfs",
            [descriptor.Extent("RW", capacity // SECTOR, "FLAT", flat, 0)],
            capacity=capacity,
            uuid=uuid,
        )
        _write_text(directory / f"{basename}.vmdk", descriptor.render(desc))
        for stale in (f"{basename}.labjournal", f"{basename}-ctk.vmdk", f"{basename}.labbase"):
            (directory / stale).unlink(missing_ok=True)
        return cls(
            directory,
            basename,
            capacity,
            uuid,
            [f"{basename}.vmdk"],
            seed=seed,
            fill=fill,
            base_ranges=None,
            next_delta=1,
            delta_format=delta_format,
        )

    @classmethod
    def create_rdm(
        cls,
        directory,
        basename: str,
        lun: Path,
        *,
        physical: bool,
        seed: int,
        fill: float = 0.4,
        uuid: str | None = None,
        delta_format: str = "seSparse",
    ) -> LabDisk:
        """A raw device mapping onto ``lun`` (a file standing in for the LUN, filled with the
        seed's content here): descriptor ``b.vmdk`` and mapping file ``b-rdm.vmdk`` (virtual
        compatibility) or ``b-rdmp.vmdk`` (physical). The mapping file is a hard link to the
        LUN file: reading it gives the LUN's bytes, as reading it on VMFS does."""
        directory, lun = Path(directory), Path(lun)
        capacity = lun.stat().st_size
        fd = os.open(lun, os.O_RDWR)
        try:
            for off, length in content.base_extents(capacity, seed, fill):
                for pos in range(off, off + length, CHUNK):
                    n = min(CHUNK, off + length - pos)
                    os.pwrite(fd, content.fill_bytes(seed, pos, n), pos)
        finally:
            os.close(fd)
        create_type = "vmfsPassthroughRawDeviceMap" if physical else "vmfsRawDeviceMap"
        mapping = f"{basename}{RDM_TYPES[create_type]}"
        (directory / mapping).unlink(missing_ok=True)
        os.link(lun, directory / mapping)
        uuid = uuid or str(uuidlib.uuid4())
        desc = descriptor.new_descriptor(
            create_type,
            [descriptor.Extent("RW", capacity // SECTOR, "VMFSRDM", mapping)],
            capacity=capacity,
            uuid=uuid,
        )
        _write_text(directory / f"{basename}.vmdk", descriptor.render(desc))
        for stale in (f"{basename}.labjournal", f"{basename}-ctk.vmdk", f"{basename}.labbase"):
            (directory / stale).unlink(missing_ok=True)
        return cls(
            directory,
            basename,
            capacity,
            uuid,
            [f"{basename}.vmdk"],
            seed=seed,
            fill=fill,
            base_ranges=None,
            next_delta=1,
            delta_format=delta_format,
        )

    @classmethod
    def load(
        cls,
        directory,
        descriptor_name: str,
        state: dict | None = None,
        *,
        delta_format: str = "seSparse",
    ) -> LabDisk:
        """Reopen a disk from its ``state()``, or adopt files that arrived some other way.

        Without state (a disk uploaded by PUT and registered later) the chain is found through
        the parent hints from ``descriptor_name`` down, and the oracle's base is whatever the
        files hold now (copied to ``<basename>.labbase``).
        """
        directory = Path(directory)
        if state is not None:
            if state.get("version") not in (1, STATE_VERSION):
                raise ValueError(f"lab disk state version {state.get('version')!r} is unknown")
            for name in state["layers"]:
                if not (directory / name).exists():
                    raise FileNotFoundError(f"lab disk layer {directory / name} is missing")
            return cls(
                directory,
                state["basename"],
                state["capacity"],
                state["uuid"],
                state["layers"],
                seed=state.get("seed"),
                fill=state.get("fill", 0.4),
                base_ranges=state.get("base_ranges"),
                next_delta=state["next_delta"],
                delta_format=state.get("delta_format", delta_format),
            )
        layers = _find_chain(directory, descriptor_name)
        m = _DELTA_RE.match(layers[0])
        basename = m.group("base") if m else layers[0].removesuffix(".vmdk")
        info = _layer_info(directory, layers[0])
        capacity = info.capacity
        uuid = plain_uuid(info.desc.ddb.get("uuid")) or str(uuidlib.uuid4())
        numbers = [int(m.group("n")) for n in layers if (m := _DELTA_RE.match(n))]
        for stale in (f"{basename}.labjournal", f"{basename}-ctk.vmdk"):
            (directory / stale).unlink(missing_ok=True)
        disk = cls(
            directory,
            basename,
            capacity,
            uuid,
            layers,
            seed=None,
            fill=0.0,
            base_ranges=[],
            next_delta=max(numbers, default=0) + 1,
            delta_format=delta_format,
        )
        try:
            disk._base_ranges = disk._snapshot_base()
        except BaseException:
            disk.close()  # the journal is open already
            raise
        return disk

    def _snapshot_base(self) -> list[tuple[int, int]]:
        """Copy the files' current content to ``<basename>.labbase``; returns its data ranges."""
        path = self.directory / f"{self.basename}.labbase"
        blocks = []
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, self.capacity)
            for pos in range(0, self.capacity, CHUNK):
                data = self._chain_read(pos, min(CHUNK, self.capacity - pos))
                for b in range(0, len(data), BLOCK):
                    piece = data[b : b + BLOCK]
                    if not is_zero(piece):
                        os.pwrite(fd, piece, pos + b)
                        blocks.append((pos + b) // BLOCK)
        finally:
            os.close(fd)
        return _merge([(b * BLOCK, min(BLOCK, self.capacity - b * BLOCK)) for b in blocks])

    def state(self) -> dict:
        """JSON-able state for :meth:`load` (the journal and ctk live in their own files)."""
        with self._lock:
            out = {
                "version": STATE_VERSION,
                "basename": self.basename,
                "capacity": self.capacity,
                "uuid": self.uuid,
                "layers": list(self._layers),
                "next_delta": self._next_delta,
                "seed": self.seed,
                "fill": self.fill,
                "change_id": self.cbt.change_id,
                "delta_format": self.delta_format,
            }
            if self.seed is None:
                out["base_ranges"] = [list(r) for r in self._base_ranges]
            return out

    def close(self) -> None:
        with self._lock:
            self._close_writer()
            self._journal.close()

    # -- files -------------------------------------------------------------------------

    @property
    def layers(self) -> list[str]:
        with self._lock:
            return list(self._layers)

    @property
    def top(self) -> str:
        with self._lock:
            return self._layers[-1]

    @property
    def change_id(self) -> str | None:
        return self.cbt.change_id

    def file_kinds(self) -> list[tuple[str, str]]:
        """Every file of the disk with its vSphere layout kind, base layer first."""
        with self._lock:
            out = []
            for name in self._layers:
                out.append((name, "diskDescriptor"))
                if name not in self._extent_of:  # asked often (layoutEx): parse each layer once
                    self._extent_of[name] = _layer_info(self.directory, name).extent
                if self._extent_of[name]:
                    out.append((self._extent_of[name], "diskExtent"))
            if self.cbt.enabled:
                out.append((self.cbt.path.name, "ctk"))
            return out

    def files(self) -> list[str]:
        return [name for name, _ in self.file_kinds()]

    def layer_formats(self) -> list[str]:
        """Each layer's createType, base first (``vmfs``, ``vmfsSparse``, ``seSparse``...)."""
        with self._lock:
            out = []
            for name in self._layers:
                if name not in self._format_of:
                    self._format_of[name] = _layer_info(self.directory, name).desc.create_type
                out.append(self._format_of[name])
            return out

    # -- snapshots ---------------------------------------------------------------------

    @property
    def lock(self) -> threading.RLock:
        """The disk's lock; hold it to make several calls one step for concurrent writers."""
        return self._lock

    def snapshot(self) -> tuple[int, str | None, int, str]:
        """Snapshot-create as one step: ``(mark, change_id or None, frozen layer index, delta)``.

        Taking the mark, ending the CBT epoch and adding the delta under the disk's lock means
        no guest write can land between them (it would be in the frozen layer but not at the
        mark, or in the new epoch but in the old layer).
        """
        with self._lock:
            mark = self.mark()
            change_id = self.cbt.advance() if self.cbt.enabled else None
            frozen = len(self._layers) - 1
            return mark, change_id, frozen, self.add_delta()

    def add_delta(self, delta_format: str | None = None) -> str:
        """Snapshot-create for this disk: a new delta over the current top becomes top.

        Written as ESXi writes it (``delta_format``, default the disk's): descriptor
        ``b-00000N.vmdk`` naming its parent and the parent's CID, and an empty extent.
        """
        delta_format = delta_format or self.delta_format
        extent_type, suffix, writer = DELTA_FORMATS[delta_format]
        with self._lock:
            self._close_writer()
            parent = self._layers[-1]
            parent_cid = _layer_info(self.directory, parent).desc.cid
            stem = f"{self.basename}-{self._next_delta:06d}"
            name, extent = f"{stem}.vmdk", f"{stem}{suffix}"
            self._next_delta += 1
            desc = descriptor.new_descriptor(
                delta_format,
                [descriptor.Extent("RW", self.capacity // SECTOR, extent_type, extent)],
                capacity=self.capacity,
                uuid=self.uuid,
                parent_hint=parent,
                parent_cid=parent_cid,
            )
            if delta_format == "vmfsSparse":
                writer.create(self.directory / extent, self.capacity, parent).close()
            else:
                writer.create(self.directory / extent, self.capacity).close()
            _write_text(self.directory / name, descriptor.render(desc))
            self._layers.append(name)
            return name

    def remove_layer(self, index: int) -> None:
        """Snapshot-remove: merge layer ``index`` into ``index-1`` and delete its files.

        The layer above (if any) is re-pointed at the parent. Content read through the top
        is unchanged, and so is the oracle.
        """
        with self._lock:
            if not 1 <= index < len(self._layers):
                raise ValueError(
                    f"layer {index} cannot be merged: the disk has layers "
                    f"0..{len(self._layers) - 1} and layer 0 has no parent"
                )
            self._close_writer()
            child_name, parent_name = self._layers[index], self._layers[index - 1]
            parent = _layer_info(self.directory, parent_name)
            child = _open_layer(self.directory, child_name)
            try:
                writer = _open_layer(self.directory, parent_name, writable=True)
                try:
                    for off, length, state in child.allocated():
                        for pos in range(off, off + length, CHUNK):
                            n = min(CHUNK, off + length - pos)
                            data = child.read_own(pos, n) if state == DATA else bytes(n)
                            # a zero grain must hide what the layers below hold: written as zeros
                            self._write_level(writer, index - 1, pos, data)
                finally:
                    writer.sync_close()
            finally:
                child.sync_close()
            # The parent's content changed: a new CID, and the layer above must name it.
            new_cid = _new_cid(parent.desc.cid)
            _rewrite_descriptor(self.directory, parent_name, cid=new_cid)
            if index + 1 < len(self._layers):
                _rewrite_descriptor(
                    self.directory,
                    self._layers[index + 1],
                    parent_hint=parent_name,
                    parent_cid=new_cid,
                )
            child_info = _layer_info(self.directory, child_name)
            if child_info.extent:
                (self.directory / child_info.extent).unlink()
            (self.directory / child_name).unlink(missing_ok=True)
            del self._layers[index]
            self._extent_of.pop(child_name, None)
            self._format_of.pop(child_name, None)

    # -- guest I/O ---------------------------------------------------------------------

    def guest_write(self, offset: int, data: bytes) -> None:
        """A write by the running guest: lands in the top layer, the journal and CBT."""
        if offset < 0 or offset + len(data) > self.capacity:
            raise ValueError(f"write {offset}+{len(data)} outside the disk ({self.capacity})")
        if not data:
            return
        with self._lock:
            if self._writer is None:
                self._writer = _open_layer(self.directory, self._layers[-1], writable=True)
            self._write_level(self._writer, len(self._layers) - 1, offset, data)
            self._writer.flush()  # a reader of the files (qemu-img, the file service) sees it
            self._journal.append(offset, data)
            self.cbt.record(offset, len(data))

    def churn(self, percent: float, seed: int) -> int:
        """Write about ``percent`` % of the disk in random 64 KiB blocks; returns bytes written.

        One block in eight is zeroed (files deleted and trimmed), the rest get new data.
        """
        blocks = -(-self.capacity // BLOCK)
        count = min(blocks, max(0, round(blocks * percent / 100.0)))
        rng = random.Random(f"churn:{seed}:{self.mark()}")
        data_seed = rng.getrandbits(48)
        written = 0
        for b in sorted(rng.sample(range(blocks), count)):
            off = b * BLOCK
            n = min(BLOCK, self.capacity - off)
            zero = rng.random() < 0.125
            self.guest_write(off, bytes(n) if zero else content.fill_bytes(data_seed, off, n))
            written += n
        return written

    # -- oracle ------------------------------------------------------------------------

    def mark(self) -> int:
        """The current position in the write journal (names the content as of now)."""
        with self._lock:
            return len(self._journal.entries)

    def _entries(self, mark: int | None) -> list[tuple[int, int, int]]:
        entries = self._journal.entries
        if mark is None:
            return list(entries)
        if not 0 <= mark <= len(entries):
            raise ValueError(f"mark {mark} is not a journal position (0..{len(entries)})")
        return entries[:mark]

    def read(self, offset: int, length: int, mark: int | None = None) -> bytes:
        """The disk's bytes at ``offset`` as of ``mark`` (None: now), from base + journal."""
        if offset < 0 or length < 0 or offset + length > self.capacity:
            raise ValueError(f"read {offset}+{length} outside the disk ({self.capacity})")
        with self._lock:
            return self._read(offset, length, self._entries(mark))

    def _read(self, offset: int, length: int, entries) -> bytes:
        """Base content overlaid with ``entries`` (journal records); lock held."""
        buf = bytearray(self._base_read(offset, length))
        end = offset + length
        for off, n, pos in entries:
            a, b = max(off, offset), min(off + n, end)
            if a < b:
                buf[a - offset : b - offset] = self._journal.data(
                    pos if pos < 0 else pos + (a - off), b - a
                )
        return bytes(buf)

    def _base_read(self, offset: int, length: int) -> bytes:
        if self.seed is None:
            with open(self.directory / f"{self.basename}.labbase", "rb") as f:
                return os.pread(f.fileno(), length, offset).ljust(length, b"\0")
        buf = bytearray(length)
        for off, n in clip(self._base_ranges, offset, offset + length, self.capacity):
            buf[off - offset : off - offset + n] = content.fill_bytes(self.seed, off, n)
        return bytes(buf)

    def allocated(self, mark: int | None = None) -> list[tuple[int, int]]:
        """Merged, block-aligned ranges that hold data (base regions + journal writes)."""
        with self._lock:
            return self._allocated(self._entries(mark))

    def _allocated(self, entries) -> list[tuple[int, int]]:
        ranges = list(self._base_ranges)
        for off, n, _pos in entries:
            start = off // BLOCK * BLOCK
            ranges.append((start, min(self.capacity, -(-(off + n) // BLOCK) * BLOCK) - start))
        return _merge(sorted(ranges))

    def pieces(self, mark: int | None = None):
        """The content as of ``mark`` (None: now) as ``(offset, bytes)`` over :meth:`allocated`.

        In order, at most CHUNK bytes each (block-aligned, since the ranges are); everything
        between them reads as zeros. "Now" is fixed when the walk starts, so guest writes
        during it do not show.
        """
        with self._lock:
            entries = self._entries(self.mark() if mark is None else mark)
            ranges = self._allocated(entries)
        for off, n in ranges:
            for p in range(off, off + n, CHUNK):
                with self._lock:
                    data = self._read(p, min(CHUNK, off + n - p), entries)
                yield p, data

    def sha256(self, mark: int | None = None) -> str:
        """SHA-256 (hex) of the whole disk as of ``mark``."""
        h = hashlib.sha256()
        pos = 0
        for off, data in self.pieces(mark):
            hash_zeros(h, off - pos)
            h.update(data)
            pos = off + len(data)
        hash_zeros(h, self.capacity - pos)
        return h.hexdigest()

    def export_raw(self, path, mark: int | None = None) -> str:
        """Write the content as of ``mark`` to a sparse raw file (for ``qemu-img compare``).

        Returns its SHA-256 (hex), hashed in the same pass (what :meth:`sha256` answers).
        """
        h = hashlib.sha256()
        pos = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, self.capacity)
            for off, data in self.pieces(mark):
                hash_zeros(h, off - pos)
                h.update(data)
                pos = off + len(data)
                if not is_zero(data):
                    os.pwrite(fd, data, off)
        finally:
            os.close(fd)
        hash_zeros(h, self.capacity - pos)
        return h.hexdigest()

    # -- CBT ---------------------------------------------------------------------------

    def query_changed(
        self, since: str, until: str, start: int = 0, max_bytes: int | None = None
    ) -> tuple[list[tuple[int, int]], int]:
        """QueryChangedDiskAreas for this disk: ``(areas, covered_length)``.

        ``since="*"`` answers with the ranges that hold data in the state ``until`` names.
        """
        if since != "*":
            return self.cbt.changed(since, until, start, max_bytes, self.capacity)
        mark = self.cbt.mark_of(until)
        end = window_end(start, max_bytes, self.capacity)
        return clip(self.allocated(mark), start, end, self.capacity), end - start

    # -- layer access (lock held) ------------------------------------------------------

    def _write_level(self, writer: _Layer, level: int, offset: int, data: bytes) -> None:
        """Write into layer ``level`` through its open ``writer``, copy-on-write: a grain
        first written in a delta must carry the bytes the chain below holds around the
        guest's, or they would read as zeros."""
        grain = writer.grain_bytes
        end = offset + len(data)
        start = offset // grain * grain
        stop = min(self.capacity, -(-end // grain) * grain)
        if start != offset or stop != end:
            head = self._chain_read(start, offset - start, level, writer) if offset > start else b""
            tail = self._chain_read(end, stop - end, level, writer) if stop > end else b""
            offset, data = start, head + bytes(data) + tail
        writer.write(offset, data)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.sync_close()
            self._writer = None

    def _chain_read(
        self, offset: int, length: int, level: int | None = None, handle: _Layer | None = None
    ) -> bytes:
        """Bytes as the files hold them now, read through the chain from layer ``level`` down;
        ``handle`` is that layer's open writer if it has one (it holds tables not yet synced)."""
        level = len(self._layers) - 1 if level is None else level
        if level < 0:
            return bytes(length)
        if handle is None and self._writer is not None and level == len(self._layers) - 1:
            handle = self._writer
        if handle is not None:
            return self._read_layer(handle, offset, length, level)
        layer = _open_layer(self.directory, self._layers[level])
        try:
            return self._read_layer(layer, offset, length, level)
        finally:
            layer.sync_close()

    def _read_layer(self, layer: _Layer, offset: int, length: int, level: int) -> bytes:
        out = bytearray()
        for off, n, state in layer.spans(offset, length):
            if state == DATA:
                out += layer.read_own(off, n)
            elif state == ZERO:
                out += bytes(n)
            else:
                out += self._chain_read(off, n, level - 1)
        return bytes(out)


# -- helpers -------------------------------------------------------------------------------


class _LayerInfo:
    """A layer's parsed descriptor, its kind and its extent file (None when the layer is one
    hosted sparse file holding its own descriptor)."""

    def __init__(self, name: str, desc: descriptor.Descriptor, hosted: bool):
        self.desc = desc
        self.hosted = hosted
        self.capacity = desc.capacity
        self.extent: str | None = None
        self.kind = "hosted"
        if hosted:
            return
        kinds = [e.type for e in desc.extents]
        if len(kinds) != 1:
            raise VmdkError(f"{name}: lab disks have one extent; this descriptor has {kinds}")
        extent = desc.extents[0]
        self.kind = {
            "FLAT": "flat",
            "VMFS": "flat",
            "VMFSRDM": "flat",  # an RDM's mapping file reads as the LUN
            "VMFSSPARSE": "vmfsSparse",
            "SESPARSE": "seSparse",
        }.get(extent.type)
        if self.kind is None:
            raise VmdkError(f"{name}: extent type {extent.type} is not one the lab writes")
        if extent.offset:
            raise VmdkError(f"{name}: lab disks do not use extents at an offset")
        self.extent = extent.filename


def _layer_info(directory: Path, name: str) -> _LayerInfo:
    path = directory / name
    with open(path, "rb") as f:
        head = f.read(SECTOR)
    if head[:4] == b"KDMV":
        with SparseExtent.open(path) as ext:
            text = ext.embedded_descriptor()
        if text is None:
            raise VmdkError(f"{name}: sparse extent without an embedded descriptor")
        return _LayerInfo(name, descriptor.parse(text), hosted=True)
    text = path.read_text(encoding="utf-8", errors="replace")
    return _LayerInfo(name, descriptor.parse(text), hosted=False)


def _find_chain(directory: Path, top: str) -> list[str]:
    """Layer names base first, following parentFileNameHint from ``top`` within ``directory``."""
    chain = [top]
    while True:
        hint = _layer_info(directory, chain[-1]).desc.parent_hint
        if not hint:
            return chain[::-1]
        name = os.path.basename(hint)
        if name in chain or len(chain) > 64 or not (directory / name).exists():
            raise VmdkError(f"{chain[-1]}: parent {hint!r} is not a file beside it")
        chain.append(name)


class _Layer:
    """One open layer: its grains' states (spans), own bytes, writes and merge list."""

    grain_bytes: int = 1

    def spans(self, offset: int, length: int):
        raise NotImplementedError

    def read_own(self, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def write(self, offset: int, data: bytes) -> None:
        raise NotImplementedError

    def allocated(self) -> list[tuple[int, int, int]]:
        raise NotImplementedError

    def sync_close(self) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Metadata of the writes so far into the file (no fsync)."""


class _FlatLayer(_Layer):
    """A flat extent (or an RDM's mapping file): every byte is the layer's own."""

    def __init__(self, path: Path, capacity: int, writable: bool):
        self.capacity = capacity
        self.fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        self.writable = writable

    def spans(self, offset, length):
        return iter([(offset, length, DATA)])

    def read_own(self, offset, length):
        return os.pread(self.fd, length, offset).ljust(length, b"\0")

    def write(self, offset, data):
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def allocated(self):
        return [(0, self.capacity, DATA)]

    def sync_close(self):
        if self.fd >= 0:
            if self.writable:
                os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


class _HostedLayer(_Layer):
    """An adopted hosted sparse file (KDMV), through vcbproxy's own hosted sparse code."""

    def __init__(self, path: Path, writable: bool):
        self.ext = SparseExtent.open(path, writable=writable)
        self.grain_bytes = self.ext.grain_bytes

    def spans(self, offset, length):
        gb = self.grain_bytes
        out = []
        pos, end = offset, offset + length
        while pos < end:
            g, within = divmod(pos, gb)
            n = min(gb - within, end - pos)
            where = self.ext.grain_offset(g)
            state = PARENT if where is None else ZERO if where == 0 else DATA
            if out and out[-1][2] == state:
                out[-1] = (out[-1][0], out[-1][1] + n, state)
            else:
                out.append((pos, n, state))
            pos += n
        return iter(out)

    def read_own(self, offset, length):
        return self.ext.read(offset, length)

    def write(self, offset, data):
        self.ext.write(offset, data, force=True)  # a written zero must hide the parent's data

    def allocated(self):
        return [(off, n, DATA) for off, n in self.ext.allocated_ranges()]

    def sync_close(self):
        if self.ext.writable:
            self.ext.sync()
        self.ext.close()


class _DeltaLayer(_Layer):
    """A vmfsSparse or SEsparse extent through the lab's own writer for that format."""

    def __init__(self, extent):
        self.ext = extent
        self.grain_bytes = extent.grain_bytes

    def spans(self, offset, length):
        return self.ext.spans(offset, length)

    def read_own(self, offset, length):
        return self.ext.read_own(offset, length)

    def write(self, offset, data):
        self.ext.write(offset, data)

    def allocated(self):
        return self.ext.allocated()

    def sync_close(self):
        self.ext.close()

    def flush(self):
        self.ext.flush()


def _open_layer(directory: Path, name: str, writable: bool = False) -> _Layer:
    info = _layer_info(directory, name)
    if info.hosted:
        return _HostedLayer(directory / name, writable)
    if info.kind == "flat":
        return _FlatLayer(directory / info.extent, info.capacity, writable)
    opener = DELTA_FORMATS[info.kind][2]
    return _DeltaLayer(opener.open(directory / info.extent, writable=writable))


def _rewrite_descriptor(directory: Path, name: str, **changes) -> None:
    """Change header fields of a layer's descriptor (text file, or embedded in place)."""
    path = directory / name
    info = _layer_info(directory, name)
    for key, value in changes.items():
        setattr(info.desc, key, value)
    text = descriptor.render(info.desc)
    if not info.hosted:
        _write_text(path, text)
        return
    fd = os.open(path, os.O_RDWR)
    try:
        header = SparseHeader.unpack(os.pread(fd, SECTOR, 0))
        room = header.descriptor_size * SECTOR
        raw = text.encode("utf-8")
        if len(raw) >= room:
            raise VmdkError(f"{name}: new descriptor does not fit the embedded space")
        os.pwrite(fd, raw.ljust(room, b"\0"), header.descriptor_offset * SECTOR)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _new_cid(old: int) -> int:
    cid = old
    while cid in (old, 0xFFFFFFFF, 0xFFFFFFFE, 0):
        cid = random.getrandbits(32)
    return cid


def plain_uuid(value: str | None) -> str | None:
    """A VMware-written uuid ("60 00 c2 ..-..": ``ddb.uuid``, ``.vmx`` ``uuid.bios``) as a
    canonical uuid string, or None if absent or malformed."""
    if not value:
        return None
    digits = "".join(value.split()).replace("-", "")
    try:
        return str(uuidlib.UUID(hex=digits))
    except ValueError:
        return None


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for off, n in ranges:
        if n <= 0:
            continue
        if out and off <= out[-1][0] + out[-1][1]:
            last_off, last_n = out[-1]
            out[-1] = (last_off, max(last_off + last_n, off + n) - last_off)
        else:
            out.append((off, n))
    return out
