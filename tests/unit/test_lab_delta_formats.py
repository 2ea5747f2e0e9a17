"""The lab's snapshot deltas in the formats ESXi writes: vmfsSparse (COWD) and SEsparse.

The lab's writers are judged by readers nobody here wrote: qemu-img (``compare`` with the
oracle's raw image, ``check``, the backing chain it opens) and dissect.hypervisor, for every
layer of a chain, before and after merges, and for chains mixing formats. The on-disk
structures are checked against the format definitions with plain ``struct`` here, not with
the lab's own parser.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.vmdk_peers import dissect_sha256, qemu_backing_chain, qemu_check, qemu_compare
from vcblab.disks import BLOCK, LabDisk
from vcbproxy.vmdk import descriptor

MIB = 1 << 20
CAP = 8 * MIB  # four 2 MiB COWD grain tables; qemu reads COWD a sector at a time: keep it small
BIG = 18 * MIB  # two 16 MiB SEsparse grain tables
FORMATS = ("vmfsSparse", "seSparse")
EXTENT = {"vmfsSparse": ("VMFSSPARSE", "-delta.vmdk"), "seSparse": ("SESPARSE", "-sesparse.vmdk")}

pytestmark = pytest.mark.usefixtures("qemu_img")


@pytest.fixture
def ds(tmp_path) -> Path:
    d = tmp_path / "ds"
    d.mkdir()
    return d


def desc_of(path: Path) -> descriptor.Descriptor:
    return descriptor.parse(path.read_text())


def assert_layer_is_the_oracle(disk: LabDisk, layer: str, mark, scratch: Path) -> None:
    """qemu-img and dissect.hypervisor both read ``layer`` (and its parents) as the oracle."""
    raw = scratch / "oracle.raw"
    want = disk.export_raw(raw, mark)
    qemu_compare(disk.directory / layer, raw)
    assert dissect_sha256(disk.directory / layer) == want, f"dissect.hypervisor reads {layer}"


def build_chain(ds: Path, formats) -> tuple[LabDisk, list]:
    """Base + writes, then one delta per format in ``formats``, each with its writes; the
    oracle marks at each snapshot and None for now."""
    disk = LabDisk.create(ds, "vm", CAP, seed=11, delta_format=formats[0])
    disk.guest_write(100, b"A" * 1000)
    disk.churn(10, seed=1)
    marks = []
    for n, fmt in enumerate(formats):
        marks.append(disk.mark())
        disk.add_delta(fmt)
        disk.guest_write(5 * BLOCK + 77, bytes([66 + n]) * 3 * BLOCK)  # partial grains both ends
        disk.guest_write(0, bytes(BLOCK))  # explicit zeros must hide the base's data
        disk.guest_write(CAP // 2 + 4096, b"\0" * 4096)  # zeros where nothing was written
        disk.guest_write(CAP - 10, bytes([70 + n]) * 10)  # the last bytes of the disk
        disk.churn(10, seed=2 + n)
    marks.append(None)
    disk._close_writer()  # tables synced: the files are what a reader would see
    return disk, marks


# -- the files, as the formats define them ----------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_snapshot_writes_a_descriptor_and_an_extent_named_as_esxi_does(ds, fmt):
    disk = LabDisk.create(ds, "web01", CAP, seed=3, delta_format=fmt)
    assert disk.add_delta() == "web01-000001.vmdk"
    extent_type, suffix = EXTENT[fmt]
    delta = desc_of(ds / "web01-000001.vmdk")
    assert delta.create_type == fmt
    assert [(e.type, e.filename, e.sectors) for e in delta.extents] == [
        (extent_type, f"web01-000001{suffix}", CAP // 512)
    ]
    assert delta.parent_hint == "web01.vmdk"
    assert delta.parent_cid == desc_of(ds / "web01.vmdk").cid
    assert disk.file_kinds()[2:] == [
        ("web01-000001.vmdk", "diskDescriptor"),
        (f"web01-000001{suffix}", "diskExtent"),
    ]
    disk.add_delta()
    second = desc_of(ds / "web01-000002.vmdk")
    assert second.parent_hint == "web01-000001.vmdk" and second.parent_cid == delta.cid
    assert qemu_backing_chain(ds / disk.top) == [
        "web01-000002.vmdk",
        "web01-000001.vmdk",
        "web01.vmdk",
    ]


def test_vmfssparse_extent_has_the_cowd_header_and_512_byte_grains(ds):
    disk = LabDisk.create(ds, "vm", CAP, seed=3, delta_format="vmfsSparse")
    disk.add_delta()
    disk.guest_write(3 * MIB, b"x" * 1024)  # two sectors in the second grain table
    disk._close_writer()
    raw = (ds / "vm-000001-delta.vmdk").read_bytes()
    # COWDisk_Header: magic, version, flags, numSectors, grainSize, gdOffset, numGDEntries,
    # freeSector; the header is 2048 bytes and the grain directory starts at sector 4
    magic, version, flags, sectors, grain, gd, entries, free = struct.unpack_from("<4s7I", raw)
    assert (magic, version, flags, sectors, grain, gd) == (b"COWD", 1, 3, CAP // 512, 1, 4)
    assert entries == CAP // 512 // 4096  # one grain table per 4096 sectors (2 MiB)
    assert raw[32:1056].rstrip(b"\0") == b"vm.vmdk"  # u.child.parentFileName
    assert free * 512 == len(raw)  # everything allocated lies before freeSector
    directory = struct.unpack_from(f"<{entries}I", raw, 4 * 512)
    assert [i for i, t in enumerate(directory) if t] == [1]  # tables only where written
    table = struct.unpack_from("<4096I", raw, directory[1] * 512)
    first = (3 * MIB // 512) % 4096
    assert table[first] and table[first + 1] == table[first] + 1  # one sector per grain
    assert sum(1 for e in table if e) == 2
    assert raw[table[first] * 512 : table[first] * 512 + 1024] == b"x" * 1024


def test_sesparse_extent_has_its_headers_regions_and_grain_types(ds):
    disk = LabDisk.create(ds, "vm", BIG, seed=3, delta_format="seSparse")
    disk.add_delta()
    at = 16 * MIB + 8192
    disk.guest_write(at, b"y" * 8192)  # two data grains in the second grain table
    disk.guest_write(at + 8192, bytes(4096))  # a zero grain after them
    disk._close_writer()
    raw = (ds / "vm-000001-sesparse.vmdk").read_bytes()
    head = struct.unpack_from("<26Q", raw)
    assert head[:10] == (0xCAFEBABE, 0x200000001, BIG // 512, 8, 64, 0, 0, 0, 0, 0)
    assert raw[26 * 8 : 512] == bytes(512 - 26 * 8)
    regions = dict(
        zip(
            ("volatile", "journal_header", "journal", "gd", "gts", "bitmap", "backmap", "grains"),
            zip(head[10::2], head[11::2], strict=True),
            strict=True,
        )
    )
    # the layout hostd logs for a new snapshot: 1 MiB-aligned regions, grains last
    assert regions["volatile"] == (1, 1) and regions["journal_header"] == (2, 2)
    assert regions["journal"] == (2048, 2048) and regions["gd"] == (4096, 2048)
    assert regions["gts"] == (6144, 2048)
    assert regions["grains"][1] == BIG // 512
    volatile = struct.unpack_from("<4Q", raw, 512)
    assert volatile[0] == 0xCAFECAFE and volatile[3] == 0  # nothing to replay
    gd = struct.unpack_from("<2Q", raw, regions["gd"][0] * 512)
    assert gd == (0, 0x1000000000000000)  # the first table handed out covers 16-32 MiB
    table = struct.unpack_from("<4096Q", raw, regions["gts"][0] * 512)
    first = (at // 4096) % 4096
    kinds = [table[first + i] >> 60 for i in range(4)]
    assert kinds == [3, 3, 2, 0]  # allocated, allocated, zero grain, unallocated

    def slot(entry):  # low 12 bits of the index in bits 48-59, the rest in bits 0-47
        return ((entry >> 48) & 0xFFF) | ((entry & ((1 << 48) - 1)) << 12)

    assert [slot(table[first]), slot(table[first + 1])] == [0, 1]
    grains = regions["grains"][0] * 512
    assert raw[grains : grains + 8192] == b"y" * 8192
    assert raw[regions["bitmap"][0] * 512] == 0b11  # two grain slots in use
    backmap = struct.unpack_from("<2Q", raw, regions["backmap"][0] * 512)
    assert backmap == (at // 4096, at // 4096 + 1)


def test_vmfssparse_cannot_hold_2_tib(ds):
    from vcblab.cowd import CowdError, CowdExtent

    with pytest.raises(CowdError, match="seSparse"):
        CowdExtent.create(ds / "big-delta.vmdk", 2 << 40)


# -- content: every layer, every merge, mixed chains ------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_layer_reads_as_the_oracle_at_its_snapshot(ds, tmp_path, fmt):
    disk, marks = build_chain(ds, [fmt, fmt])
    assert disk.layers == ["vm.vmdk", "vm-000001.vmdk", "vm-000002.vmdk"]
    for layer, mark in zip(disk.layers, marks, strict=True):
        assert_layer_is_the_oracle(disk, layer, mark, tmp_path)
    qemu_check(ds / disk.top)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("order", [[1, 1], [2, 1], [1], [2]])
def test_merges_in_any_position_keep_what_qemu_and_dissect_read(ds, tmp_path, fmt, order):
    disk, marks = build_chain(ds, [fmt, fmt])
    before = [disk.sha256(m) for m in marks]
    for index in order:
        name = disk.layers[index]
        extent = desc_of(ds / name).extents[0].filename
        disk.remove_layer(index)
        assert not (ds / name).exists() and not (ds / extent).exists()
        assert_layer_is_the_oracle(disk, disk.top, None, tmp_path)
    assert [disk.sha256(m) for m in marks] == before
    disk.guest_write(3 * BLOCK + 5, b"after merge")  # into whatever is top now
    disk.churn(5, seed=9)
    disk._close_writer()
    assert_layer_is_the_oracle(disk, disk.top, None, tmp_path)
    if len(disk.layers) > 1:
        above = desc_of(ds / disk.layers[1])
        assert above.parent_hint == disk.layers[0]
        assert above.parent_cid == desc_of(ds / disk.layers[0]).cid


@pytest.mark.parametrize(
    "formats", [["vmfsSparse", "seSparse"], ["seSparse", "vmfsSparse", "seSparse"]]
)
def test_chains_mixing_formats_read_as_the_oracle(ds, tmp_path, formats):
    disk, marks = build_chain(ds, formats)
    for layer, mark in zip(disk.layers, marks, strict=True):
        assert_layer_is_the_oracle(disk, layer, mark, tmp_path)
    disk.remove_layer(1)  # a 512-byte-grain delta into a 4 KiB one, or the other way
    assert_layer_is_the_oracle(disk, disk.top, None, tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_delta_over_an_uploaded_hosted_sparse_base(ds, tmp_path, fmt):
    import subprocess

    raw = tmp_path / "src.raw"
    data = bytearray(CAP)
    data[BLOCK : BLOCK + 5000] = b"u" * 5000
    raw.write_bytes(data)
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(ds / "up.vmdk")],
        check=True,
    )
    disk = LabDisk.load(ds, "up.vmdk", None, delta_format=fmt)
    disk.add_delta()
    disk.guest_write(BLOCK + 1, b"delta")
    disk.churn(5, seed=1)
    disk._close_writer()
    assert_layer_is_the_oracle(disk, disk.top, None, tmp_path)
    disk.remove_layer(1)
    assert_layer_is_the_oracle(disk, disk.top, None, tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_state_reloads_a_chain_of_esxi_deltas(ds, tmp_path, fmt):
    import json

    disk, marks = build_chain(ds, [fmt])
    state = json.loads(json.dumps(disk.state()))
    assert state["delta_format"] == fmt
    disk.close()
    again = LabDisk.load(ds, state["layers"][-1], state)
    assert again.delta_format == fmt
    again.guest_write(BLOCK, b"later")
    assert again.add_delta() == "vm-000002.vmdk"
    again.guest_write(2 * BLOCK, b"and later")
    again._close_writer()
    assert_layer_is_the_oracle(again, again.top, None, tmp_path)
