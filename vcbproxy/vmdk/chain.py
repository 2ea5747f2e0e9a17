"""A virtual disk as a chain of layers (base + snapshot deltas), mapped to byte runs in files.

``DiskChain.open("vm-000001.vmdk", opener)`` reads the top descriptor, follows
``parentFileNameHint`` down to the base, and answers "where does each byte of the virtual disk
live?" as :class:`Run` objects. The copier then ranged-reads those files directly, so a
consolidated export never has to interpret VMDK formats itself.

Layers may be flat (``vmfs``, ``monolithicFlat``...; a virtual-mode RDM's mapping file reads
as the LUN), hosted sparse (``monolithicSparse``, ``twoGbMaxExtentSparse``), or ESXi's
snapshot deltas: ``vmfsSparse`` (COWD, :mod:`vcbproxy.vmdk.cowd`) and ``seSparse``
(:mod:`vcbproxy.vmdk.sesparse`), in any mix. Only grain tables are read to build the map;
the data is read once, by the copier.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.cowd import MAGIC as COWD_MAGIC
from vcbproxy.vmdk.cowd import CowdExtent
from vcbproxy.vmdk.descriptor import NO_PARENT_CID, SECTOR, Descriptor, parse
from vcbproxy.vmdk.grainmap import GrainTableExtent
from vcbproxy.vmdk.io import OpenFiles, RandomAccess
from vcbproxy.vmdk.sesparse import SesparseExtent, is_sesparse
from vcbproxy.vmdk.sparse import MAGIC, SparseExtent

log = logging.getLogger(__name__)

MAX_DESCRIPTOR = 1 << 20  # a text descriptor is a few hundred bytes; refuse to slurp a flat file
MAX_DEPTH = 255  # VMware allows 32 snapshots; a loop in parent hints must not hang us

FLAT_TYPES = (
    "monolithicFlat",
    "vmfs",
    "twoGbMaxExtentFlat",
    "vmfsPreallocated",
    "vmfsEagerZeroedThick",
    "vmfsThin",
    "custom",
)
SPARSE_TYPES = ("monolithicSparse", "twoGbMaxExtentSparse")
DELTA_TYPES = ("vmfsSparse", "seSparse")  # ESXi's snapshot deltas
RDM_TYPES = ("vmfsRawDeviceMap",)  # virtual compatibility: its mapping file reads as the LUN
UNSUPPORTED_TYPES = (
    "streamOptimized",
    "vmfsRaw",
    "vmfsPassthroughRawDeviceMap",
    "fullDevice",
    "partitionedDevice",
)
_WHY_UNSUPPORTED = {
    "vmfsPassthroughRawDeviceMap": (
        "a physical-mode RDM: ESXi does not snapshot it and the guest owns the LUN"
    ),
}


@dataclass
class Run:
    """``length`` bytes of the virtual disk at ``offset``, stored in ``source`` at
    ``source_offset`` (``source`` None: zeros, nothing to read)."""

    offset: int
    length: int
    source: str | None
    source_offset: int


@dataclass
class _LayerExtent:
    start: int  # byte offset in the virtual disk
    length: int
    kind: str  # "flat", "sparse" (hosted), "grains" (vmfsSparse, SEsparse), "zero"
    filename: str | None  # relative to the top's directory (or absolute /vmfs/volumes/...)
    file_offset: int = 0  # flat: byte offset of the extent's data in its file
    sparse: SparseExtent | None = None
    grains: GrainTableExtent | None = None


@dataclass
class _Layer:
    name: str
    descriptor: Descriptor
    extents: list[_LayerExtent]


def _join(base_name: str, name: str) -> str:
    """A name in a descriptor is relative to that descriptor's directory."""
    if posixpath.isabs(name):
        return name
    directory = posixpath.dirname(base_name)
    if posixpath.isabs(directory):
        return posixpath.normpath(posixpath.join(directory, name))
    joined = posixpath.normpath(posixpath.join(directory, name)) if directory else name
    return joined


class DiskChain:
    """The layers of one virtual disk, base first."""

    def __init__(self, layers: list[_Layer], opener: Callable[[str], RandomAccess]):
        self._layers = layers
        self._opener = opener

    @classmethod
    def open(cls, descriptor_name: str, opener: Callable[[str], RandomAccess]) -> DiskChain:
        """Open the chain whose top descriptor is ``descriptor_name`` (opened via ``opener``).

        The caller owns what ``opener`` returns (it closes the files; the chain only reads).
        """
        opener = OpenFiles(opener).open  # never closed here: the caller owns the files
        layers: list[_Layer] = []
        name = descriptor_name
        seen: set[str] = set()
        while True:
            if name in seen or len(layers) >= MAX_DEPTH:
                raise VmdkError(f"{descriptor_name}: parent chain loops or is too deep at {name}")
            seen.add(name)
            layer = _open_layer(name, opener)
            layers.append(layer)
            hint = layer.descriptor.parent_hint
            if not hint:
                break
            name = _join(name, hint)
        for child, parent in zip(layers, layers[1:], strict=False):
            if child.descriptor.parent_cid not in (NO_PARENT_CID, parent.descriptor.cid):
                # VMware refuses such a chain ("parent modified since the child was created");
                # we only read, so warn and go on: the data may still be what the user wants.
                log.warning(
                    "%s: parentCID %08x does not match the CID %08x of its parent %s",
                    child.name,
                    child.descriptor.parent_cid,
                    parent.descriptor.cid,
                    parent.name,
                )
        layers.reverse()
        top_capacity = layers[-1].descriptor.capacity
        for layer in layers[:-1]:
            if layer.descriptor.capacity > top_capacity:
                raise VmdkError(
                    f"{layer.name}: parent is larger than the disk "
                    f"({layer.descriptor.capacity} > {top_capacity})"
                )
        return cls(layers, opener)

    @property
    def capacity(self) -> int:
        return self._layers[-1].descriptor.capacity

    @property
    def layers(self) -> list[Descriptor]:
        return [layer.descriptor for layer in self._layers]

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self._layers]

    def files(self) -> list[str]:
        """Every file the chain uses (descriptors and extents), base first, no duplicates."""
        names: list[str] = []
        for layer in self._layers:
            for name in [layer.name] + [e.filename for e in layer.extents if e.filename]:
                if name not in names:
                    names.append(name)
        return names

    def runs(self) -> Iterator[Run]:
        """Runs covering ``[0, capacity)`` in order, coalesced, each from the topmost layer
        that holds the data (flat layers hold everything, sparse ones their allocated grains)."""
        pending: Run | None = None
        for run in self._resolve(len(self._layers) - 1, 0, self.capacity):
            if run.length == 0:
                continue
            if (
                pending is not None
                and pending.source == run.source
                and (
                    run.source is None
                    or pending.source_offset + pending.length == run.source_offset
                )
            ):
                pending.length += run.length
                continue
            if pending is not None:
                yield pending
            pending = Run(run.offset, run.length, run.source, run.source_offset)
        if pending is not None:
            yield pending

    def _resolve(self, index: int, start: int, end: int) -> Iterator[Run]:
        """Runs for ``[start, end)`` as seen from layer ``index`` (falling through to parents)."""
        if index < 0:
            yield Run(start, end - start, None, 0)
            return
        layer = self._layers[index]
        pos = start
        for ext in layer.extents:
            ext_end = ext.start + ext.length
            if ext_end <= pos or ext.start >= end:
                continue
            lo, hi = max(pos, ext.start), min(end, ext_end)
            if lo > pos:  # not covered by this layer's extents (smaller parent): zeros
                yield from self._resolve(index - 1, pos, lo)
            if ext.kind == "flat":
                yield Run(lo, hi - lo, ext.filename, ext.file_offset + (lo - ext.start))
            elif ext.kind == "zero":
                yield Run(lo, hi - lo, None, 0)
            elif ext.kind == "grains":
                yield from self._resolve_grains(index, ext, lo, hi)
            else:
                yield from self._resolve_sparse(index, ext, lo, hi)
            pos = hi
        if pos < end:
            if pos >= layer.descriptor.capacity:
                yield Run(pos, end - pos, None, 0)
            else:
                yield from self._resolve(index - 1, pos, end)

    def _resolve_grains(self, index: int, ext: _LayerExtent, lo: int, hi: int) -> Iterator[Run]:
        """An ESXi delta's spans: its own data, zeros, or the parent's answer for the rest."""
        assert ext.grains is not None  # a "grains" extent always carries its grain table
        for start, stop, where in ext.grains.spans(lo - ext.start, hi - ext.start):
            a, b = ext.start + start, ext.start + stop
            if where is None:
                yield from self._resolve(index - 1, a, b)
            elif where == 0:
                yield Run(a, b - a, None, 0)
            else:
                yield Run(a, b - a, ext.filename, where)

    def _resolve_sparse(self, index: int, ext: _LayerExtent, lo: int, hi: int) -> Iterator[Run]:
        sparse = ext.sparse
        assert sparse is not None  # a "sparse" extent always carries its SparseExtent
        gb = sparse.grain_bytes
        pos = lo
        while pos < hi:
            g, within = divmod(pos - ext.start, gb)
            where = sparse.grain_offset(g)
            stop = min(hi, ext.start + (g + 1) * gb)
            if where is None:
                # gather the unallocated span and let the parent answer for it at once
                last = -(-(hi - ext.start) // gb)
                stop = min(hi, ext.start + sparse.next_allocated(g + 1, last) * gb)
                yield from self._resolve(index - 1, pos, stop)
            elif where == 0:
                yield Run(pos, stop - pos, None, 0)
            else:
                yield Run(pos, stop - pos, ext.filename, where + within)
            pos = stop

    def read(self, offset: int, length: int) -> bytes:
        """Bytes of the virtual disk (for tests and small reads; copiers use :meth:`runs`).

        Files are opened through the opener given to :meth:`open`, once per name; closing
        them stays the caller's job, as for the files :meth:`open` itself reads."""
        if offset < 0 or offset + length > self.capacity:
            raise VmdkError(f"read {offset}+{length} outside the disk ({self.capacity} bytes)")
        out = bytearray()
        end = offset + length
        for run in self.runs():
            r_end = run.offset + run.length
            if r_end <= offset or run.offset >= end:
                continue
            lo, hi = max(offset, run.offset), min(end, r_end)
            if run.source is None:
                out += bytes(hi - lo)
            else:
                ra = self._opener(run.source)
                data = ra.pread(run.source_offset + (lo - run.offset), hi - lo)
                if len(data) != hi - lo:
                    raise VmdkError(f"{run.source}: file ends before the data it maps")
                out += data
        return bytes(out)


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
                raise VmdkError(f"the disk map does not cover offset {pos}")
            stop = min(end, run.offset + run.length)
            if run.source is None:
                yield pos, stop - pos
            else:
                offset = pos
                for chunk in stream_of(
                    run.source, run.source_offset + (pos - run.offset), stop - pos
                ):
                    yield offset, chunk
                    offset += len(chunk)
                if offset != stop:
                    raise VmdkError(f"{run.source} ends before the data it maps (at {offset})")
            pos = stop


def skip_holes(
    runs: Iterable[Run], open_file: Callable[[str], RandomAccess] | None
) -> Iterator[Run]:
    """``runs`` with the holes of their source files turned into zero runs.

    Only sources that know their holes (``holes_known``, ``data_ranges``: a SAN file, by
    SEEK_DATA/SEEK_HOLE) are asked; holes read as zeros, so nothing is lost by never
    reading them. A run reaching past the end of its file is left whole, so that reading
    it still reports the short file.
    """
    for run in runs:
        source = open_file(run.source) if open_file is not None and run.source is not None else None
        if (
            source is None
            or not getattr(source, "holes_known", False)
            or not hasattr(source, "data_ranges")
            or run.source_offset + run.length > source.size
        ):
            yield run
            continue
        shift = run.offset - run.source_offset
        pos, end = run.offset, run.offset + run.length
        for start, length in source.data_ranges(run.source_offset, run.length):
            if start + shift > pos:
                yield Run(pos, start + shift - pos, None, 0)
            yield Run(start + shift, length, run.source, start)
            pos = start + shift + length
        if pos < end:
            yield Run(pos, end - pos, None, 0)


def _open_layer(name: str, opener: Callable[[str], RandomAccess]) -> _Layer:
    ra = opener(name)
    head = ra.pread(0, 4)
    if len(head) == 4 and int.from_bytes(head, "little") == MAGIC:
        sparse = SparseExtent.from_reader(ra)
        text = sparse.embedded_descriptor()
        if text is None:
            raise VmdkError(f"{name}: a sparse extent without a descriptor cannot start a disk")
        descriptor = parse(text)
        return _Layer(name, descriptor, _layer_extents(name, descriptor, opener, {name: sparse}))
    if head == COWD_MAGIC or is_sesparse(ra.pread(0, 8)):
        kind = "vmfsSparse" if head == COWD_MAGIC else "SEsparse"
        raise VmdkError(
            f"{name}: a {kind} extent, not a descriptor; open the descriptor that names it"
        )
    if ra.size > MAX_DESCRIPTOR:
        raise VmdkError(f"{name}: not a VMDK descriptor ({ra.size} bytes)")
    raw, _, padding = ra.pread(0, ra.size).partition(b"\0")
    # Descriptor files may be padded to a sector; qemu-img's padding is NULs with a stray
    # newline among them. Anything else after the first NUL means this is not a descriptor.
    if padding.strip(b"\0\r\n"):
        raise VmdkError(f"{name}: not a VMDK descriptor (binary content)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # older Windows hosts wrote encoding="windows-1252": file names may be 8-bit
        text = raw.decode("latin-1")
    try:
        descriptor = parse(text)
    except VmdkError as exc:
        raise VmdkError(f"{name}: {exc}") from None
    return _Layer(name, descriptor, _layer_extents(name, descriptor, opener, {}))


def _layer_extents(
    name: str, d: Descriptor, opener, preopened: dict[str, SparseExtent]
) -> list[_LayerExtent]:
    if d.create_type == "streamOptimized":
        raise VmdkError(
            f"{name}: createType streamOptimized is unsupported in a disk chain "
            "(read it with vcbproxy.vmdk.content.disk_pieces)"
        )
    if d.create_type in UNSUPPORTED_TYPES:
        why = _WHY_UNSUPPORTED.get(d.create_type)
        raise VmdkError(
            f"{name}: createType {d.create_type} is unsupported" + (f" ({why})" if why else "")
        )
    out: list[_LayerExtent] = []
    pos = 0
    for e in d.extents:
        length = e.sectors * SECTOR
        fname = _join(name, e.filename) if e.filename else None
        if e.type in ("FLAT", "VMFS") or (e.type == "VMFSRDM" and d.create_type in RDM_TYPES):
            out.append(_LayerExtent(pos, length, "flat", fname, e.offset * SECTOR))
        elif e.type in ("VMFSSPARSE", "SESPARSE") or (
            e.type == "SPARSE"
            and not preopened
            and fname is not None
            and _magic(opener, fname) == COWD_MAGIC
        ):
            # a hosted descriptor's SPARSE extent may be a COWD file too (as qemu reads it)
            if fname is None:
                raise VmdkError(f"{name}: a {e.type} extent names no file")
            grains = _open_grains(opener, fname, e.type)
            if grains.capacity < length:
                raise VmdkError(
                    f"{fname}: extent holds {grains.capacity} bytes, the descriptor says {length}"
                )
            out.append(_LayerExtent(pos, length, "grains", fname, 0, grains=grains))
        elif e.type == "ZERO":
            out.append(_LayerExtent(pos, length, "zero", None))
        elif e.type == "SPARSE":
            if preopened and len(d.extents) == 1:
                # monolithicSparse: the extent is the file itself, even if it was renamed
                fname = name
            if fname is None:
                raise VmdkError(f"{name}: a SPARSE extent names no file")
            sparse = preopened.get(fname)
            if sparse is None:
                ra = opener(fname)
                sparse = SparseExtent.from_reader(ra)
            if sparse.compressed:
                raise VmdkError(
                    f"{fname}: compressed (streamOptimized) extents are unsupported in a disk chain"
                )
            if sparse.capacity < length:
                raise VmdkError(
                    f"{fname}: extent holds {sparse.capacity} bytes, the descriptor says {length}"
                )
            out.append(_LayerExtent(pos, length, "sparse", fname, 0, sparse))
        else:
            raise VmdkError(f"{name}: extent type {e.type} is unsupported")
        pos += length
    return out


def _magic(opener, name: str) -> bytes:
    return opener(name).pread(0, 8)[:4]


def _open_grains(opener, name: str, extent_type: str) -> GrainTableExtent:
    """The vmfsSparse or SEsparse extent ``name``, by what its first bytes say."""
    ra = opener(name)
    head = ra.pread(0, 512)  # the magic, and the whole header for the extent to parse
    if head[:4] == COWD_MAGIC:
        if extent_type == "SESPARSE":
            raise VmdkError(f"{name}: a SESPARSE extent line names a vmfsSparse (COWD) file")
        return CowdExtent.from_reader(ra, name, head)
    if is_sesparse(head):
        if extent_type != "SESPARSE":
            raise VmdkError(f"{name}: a {extent_type} extent line names an SEsparse file")
        return SesparseExtent.from_reader(ra, name, head)
    raise VmdkError(f"{name}: not a {extent_type} extent (magic {head[:8].hex()})")
