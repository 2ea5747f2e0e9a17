"""vcbproxy's readers of ESXi's snapshot deltas (vmfsSparse/COWD, SEsparse), against chains
the lab writes with its own, independent writers (which qemu-img and dissect.hypervisor
judge in test_lab_delta_formats.py); the lab's oracle says what every byte must be.
"""

from __future__ import annotations

import random
import struct
from array import array
from pathlib import Path

import pytest

from vcblab.disks import BLOCK, LabDisk
from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.chain import DiskChain
from vcbproxy.vmdk.grainmap import FIRST_UNIT, PARENT, ZERO, table_runs
from vcbproxy.vmdk.io import LocalFile, local_opener

MIB = 1 << 20
CAP = 24 * MIB  # two SEsparse grain tables (16 MiB each), twelve COWD ones (2 MiB)
FORMATS = ("vmfsSparse", "seSparse")


@pytest.fixture
def ds(tmp_path) -> Path:
    d = tmp_path / "ds"
    d.mkdir()
    return d


class CountingOpener:
    """Opens local files and counts reads per file (what a remote transport pays)."""

    def __init__(self, directory: Path):
        self._open = local_opener(directory)
        self.reads: dict[str, int] = {}
        self.files: list[LocalFile] = []

    def __call__(self, name: str):
        f = self._open(name)
        self.files.append(f)
        real = f.pread

        def pread(offset, length):
            self.reads[name] = self.reads.get(name, 0) + 1
            return real(offset, length)

        f.pread = pread
        return f

    def close(self):
        for f in self.files:
            f.close()


def chain_of(disk: LabDisk, layer: str | None = None):
    opener = CountingOpener(disk.directory)
    return DiskChain.open(layer or disk.top, opener), opener


def build(ds: Path, formats, base: str = "flat", cap: int = CAP) -> tuple[LabDisk, list]:
    if base == "flat":
        disk = LabDisk.create(ds, "vm", cap, seed=5, delta_format=formats[0])
    else:  # a hosted monolithicSparse base, as an uploaded disk may be
        import subprocess

        raw = ds / "src.raw"
        raw.write_bytes(random.Random(1).randbytes(cap // 2).ljust(cap, b"\0"))
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(ds / "vm.vmdk")],
            check=True,
        )
        raw.unlink()
        disk = LabDisk.load(ds, "vm.vmdk", None, delta_format=formats[0])
    marks = []
    for n, fmt in enumerate(formats):
        disk.churn(8, seed=10 + n)
        marks.append(disk.mark())
        disk.add_delta(fmt)
        disk.guest_write(3 * BLOCK + 100, bytes([97 + n]) * 5000)  # partial grains
        disk.guest_write(16 * MIB - 4096, bytes(8192))  # zeros across a table boundary
    disk.churn(8, seed=99)
    marks.append(None)
    disk._close_writer()
    return disk, marks


@pytest.mark.parametrize(
    "formats, base",
    [
        (["vmfsSparse"], "flat"),
        (["seSparse"], "flat"),
        (["vmfsSparse", "vmfsSparse"], "flat"),
        (["seSparse", "seSparse"], "flat"),
        (["vmfsSparse", "seSparse", "vmfsSparse"], "flat"),
        (["seSparse", "vmfsSparse"], "hosted"),
    ],
)
def test_every_layer_reads_as_the_oracle(ds, formats, base):
    disk, marks = build(ds, formats, base)
    for layer, mark in zip(disk.layers, marks, strict=True):
        chain, opener = chain_of(disk, layer)
        try:
            assert chain.layer_names == disk.layers[: disk.layers.index(layer) + 1]
            runs = list(chain.runs())
            assert runs[0].offset == 0 and sum(r.length for r in runs) == disk.capacity
            assert all(
                a.offset + a.length == b.offset for a, b in zip(runs, runs[1:], strict=False)
            )
            assert chain.read(0, disk.capacity) == disk.read(0, disk.capacity, mark), layer
        finally:
            opener.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_runs_name_the_delta_files_and_read_zero_grains_as_holes(ds, fmt):
    disk = LabDisk.create(ds, "vm", CAP, seed=5, delta_format=fmt)
    disk.add_delta()
    disk.guest_write(2 * MIB, b"d" * 64 * 1024)
    disk.guest_write(5 * MIB, bytes(64 * 1024))  # zeros over the base's data, if any
    disk._close_writer()
    chain, opener = chain_of(disk)
    try:
        runs = {r.offset: r for r in chain.runs()}
        extent = "vm-000001-delta.vmdk" if fmt == "vmfsSparse" else "vm-000001-sesparse.vmdk"
        assert runs[2 * MIB].source == extent and runs[2 * MIB].length == 64 * 1024
        zero = runs.get(5 * MIB)
        if fmt == "seSparse":  # a zero grain: nothing to read
            assert zero is not None and zero.source is None and zero.length == 64 * 1024
        else:  # vmfsSparse has no zero grain: the zeros are data in the delta
            assert zero is not None and zero.source == extent
        assert chain.read(0, CAP) == disk.read(0, CAP)
    finally:
        opener.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_grain_tables_are_read_once_and_in_batches(ds, fmt):
    disk, _ = build(ds, [fmt])
    chain, opener = chain_of(disk)
    try:
        list(chain.runs())
        list(chain.runs())  # a second walk: every table comes from the cache
        extent = [n for n in opener.reads if n.endswith(("-delta.vmdk", "-sesparse.vmdk"))][0]
        tables = -(-CAP // (2 * MIB if fmt == "vmfsSparse" else 16 * MIB))
        # header (+ volatile header) + directory + at most one read per table
        assert opener.reads[extent] <= 3 + tables
        if fmt == "seSparse":  # its tables lie side by side: one read brings them all
            assert opener.reads[extent] == 4
    finally:
        opener.close()


def test_sesparse_beyond_2_tib_uses_64_bit_entries(ds):
    """A 3 TiB disk: seSparse, as ESXi writes for disks of 2 TB and more (vmfsSparse cannot)."""
    cap = 3 << 40
    disk = LabDisk.create(ds, "big", cap, seed=5, fill=0.0, delta_format="seSparse")
    disk.add_delta()
    far = cap - 3 * MIB
    disk.guest_write(far, b"F" * 8192)
    disk.guest_write(2 << 40, b"T" * 4096)
    disk._close_writer()
    chain, opener = chain_of(disk)
    try:
        assert chain.capacity == cap
        assert chain.read(far - 4096, 16384) == bytes(4096) + b"F" * 8192 + bytes(4096)
        assert chain.read(2 << 40, 4096) == b"T" * 4096
        data = [r for r in chain.runs() if r.source and r.source.endswith("-sesparse.vmdk")]
        assert [(r.offset, r.length) for r in data] == [(2 << 40, 4096), (far, 8192)]
    finally:
        opener.close()


# -- what is refused, and how grain types read -------------------------------------------


def sesparse_disk(ds: Path) -> tuple[LabDisk, Path]:
    disk = LabDisk.create(ds, "vm", CAP, seed=5, delta_format="seSparse")
    disk.add_delta()
    disk.guest_write(MIB, b"s" * 8192)
    disk._close_writer()
    return disk, ds / "vm-000001-sesparse.vmdk"


def poke(path: Path, offset: int, fmt: str, *values) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, *values))


def sesparse_region(path: Path, index: int) -> int:
    """Byte offset of a region (0 volatile ... 3 grain directory, 4 tables, 7 grains)."""
    head = struct.unpack_from("<26Q", path.read_bytes()[:512])
    return head[10 + 2 * index] * 512


def test_sesparse_unmapped_grains_read_as_zeros(ds):
    disk, path = sesparse_disk(ds)
    first = sesparse_region(path, 4) + (MIB // 4096) * 8
    poke(path, first, "<Q", 0x1000000000000000)  # type 1: unmapped by the guest (SCSI UNMAP)
    chain, opener = chain_of(disk)
    try:
        assert chain.read(MIB, 8192) == bytes(4096) + b"s" * 4096
    finally:
        opener.close()


@pytest.mark.parametrize(
    "where, fmt, value, message",
    [
        (1, "<Q", 1, "journal must be replayed"),  # volatile header: replayJournal set
        (3, "<Q", 0x2000000000000000, "grain directory entry"),
        (4, "<Q", 0x5000000000000000, "no known type"),
    ],
)
def test_sesparse_damage_is_refused_with_what_is_wrong(ds, where, fmt, value, message):
    disk, path = sesparse_disk(ds)
    offset = sesparse_region(path, 0) + 24 if where == 1 else sesparse_region(path, where)
    offset += (MIB // 4096) * 8 if where == 4 else 0
    poke(path, offset, fmt, value)
    opener = CountingOpener(ds)
    try:
        with pytest.raises(VmdkError, match=message):
            list(DiskChain.open(disk.top, opener).runs())
    finally:
        opener.close()


def test_cowd_from_workstation_3_is_refused(ds):
    disk = LabDisk.create(ds, "vm", CAP, seed=5, delta_format="vmfsSparse")
    disk.add_delta()
    disk._close_writer()
    poke(ds / "vm-000001-delta.vmdk", 4, "<I", 3)  # version 3: hosted COWD, 512-entry tables
    opener = CountingOpener(ds)
    try:
        with pytest.raises(VmdkError, match="not ESXi's vmfsSparse"):
            DiskChain.open(disk.top, opener)
    finally:
        opener.close()


def test_an_extent_line_must_name_a_file_of_its_kind(ds):
    disk = LabDisk.create(ds, "vm", CAP, seed=5, delta_format="vmfsSparse")
    disk.add_delta()
    disk._close_writer()
    text = (ds / "vm-000001.vmdk").read_text().replace("VMFSSPARSE", "SESPARSE")
    (ds / "vm-000001.vmdk").write_text(text)
    opener = CountingOpener(ds)
    try:
        with pytest.raises(VmdkError, match="SESPARSE extent line names a vmfsSparse"):
            DiskChain.open(disk.top, opener)
    finally:
        opener.close()


# -- the run finder ------------------------------------------------------------------------


def naive_runs(targets, start, stop):
    out = []
    for i in range(start, stop):
        t = targets[i]
        if out:
            a, b, first = out[-1]
            if first == t == PARENT or first == t == ZERO:
                out[-1] = (a, i + 1, first)
                continue
            if first >= FIRST_UNIT and t == first + (i - a):
                out[-1] = (a, i + 1, first)
                continue
        out.append((i, i + 1, t))
    return out


@pytest.mark.parametrize("code", ["I", "Q"])
@pytest.mark.parametrize("seed", range(6))
def test_table_runs_agrees_with_a_grain_by_grain_walk(code, seed):
    rng = random.Random(seed)
    targets = array(code)
    unit = 10
    while len(targets) < 4096:
        kind = rng.choice(["parent", "zero", "data", "data", "jump"])
        n = rng.choice([1, 2, 3, 7, 64, 300])
        if kind == "parent":
            targets.extend([PARENT] * n)
        elif kind == "zero":
            targets.extend([ZERO] * n)
        else:
            if kind == "jump":
                unit += rng.randrange(2, 1000)
            targets.extend(range(unit, unit + n))
            unit += n
    del targets[4096:]
    for start, stop in [(0, 4096), (5, 4000), (100, 101), (4095, 4096)]:
        assert list(table_runs(targets, start, stop)) == naive_runs(targets, start, stop)
