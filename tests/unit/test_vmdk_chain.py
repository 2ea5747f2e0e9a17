"""Disk chains: which file holds each byte of a snapshot's view of a disk."""

import os
import random

import pytest

from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.chain import DiskChain, Run
from vcbproxy.vmdk.descriptor import Extent, new_descriptor, render
from vcbproxy.vmdk.io import local_opener
from vcbproxy.vmdk.sparse import SparseExtent

MIB = 1 << 20
GRAIN = 64 * 1024


class Opener:
    """local_opener that remembers what was opened (and closes it all at the end)."""

    def __init__(self, directory):
        self._open = local_opener(directory)
        self.names = []
        self.handles = []

    def __call__(self, name):
        self.names.append(name)
        handle = self._open(name)
        self.handles.append(handle)
        return handle

    def close(self):
        for h in self.handles:
            h.close()


@pytest.fixture
def opener(tmp_path):
    o = Opener(tmp_path)
    yield o
    o.close()


def make_flat(directory, name, data, create_type="monolithicFlat", extent_type="FLAT"):
    flat = name.replace(".vmdk", "-flat.vmdk")
    (directory / flat).write_bytes(data)
    d = new_descriptor(
        create_type, [Extent("RW", len(data) // 512, extent_type, flat)], capacity=len(data)
    )
    (directory / name).write_text(render(d))
    return d


def make_delta(directory, name, parent, capacity, writes, *, parent_cid=1):
    """A monolithicSparse delta (descriptor embedded), as hosted products write them."""
    d = new_descriptor(
        "monolithicSparse",
        [Extent("RW", capacity // 512, "SPARSE", name)],
        capacity=capacity,
        parent_hint=parent,
        parent_cid=parent_cid,
    )
    with SparseExtent.create(directory / name, capacity, descriptor=render(d)) as ext:
        for off, data in writes:
            ext.write(off, data, force=True)


def apply(base, writes):
    out = bytearray(base)
    for off, data in writes:
        out[off : off + len(data)] = data
    return bytes(out)


def check_runs(chain):
    runs = list(chain.runs())
    pos = 0
    for a, b in zip(runs, runs[1:], strict=False):
        # coalesced: neighbours never continue each other
        assert not (
            a.source == b.source
            and (a.source is None or a.source_offset + a.length == b.source_offset)
        )
    for r in runs:
        assert r.offset == pos and r.length > 0
        pos += r.length
    assert pos == chain.capacity
    return runs


def test_flat_disk_is_one_run(tmp_path, opener):
    make_flat(tmp_path, "vm.vmdk", os.urandom(2 * MIB), create_type="vmfs", extent_type="VMFS")
    chain = DiskChain.open("vm.vmdk", opener)
    assert chain.capacity == 2 * MIB
    assert [d.create_type for d in chain.layers] == ["vmfs"]
    assert check_runs(chain) == [Run(0, 2 * MIB, "vm-flat.vmdk", 0)]
    assert chain.files() == ["vm.vmdk", "vm-flat.vmdk"]


def test_snapshot_deltas_over_flat_base(tmp_path, opener):
    cap = 4 * MIB
    base = os.urandom(cap)
    make_flat(tmp_path, "vm.vmdk", base)
    w1 = [(GRAIN * 3 + 10, b"A" * 5000), (2 * MIB, os.urandom(3 * GRAIN))]
    w2 = [(GRAIN * 3, b"B" * 100), (3 * MIB, bytes(GRAIN))]  # explicit zeros hide the base
    make_delta(tmp_path, "vm-000001.vmdk", "vm.vmdk", cap, w1)
    make_delta(tmp_path, "vm-000002.vmdk", "vm-000001.vmdk", cap, w2)
    chain = DiskChain.open("vm-000002.vmdk", opener)
    assert len(chain.layers) == 3 and chain.capacity == cap
    assert chain.files() == ["vm.vmdk", "vm-flat.vmdk", "vm-000001.vmdk", "vm-000002.vmdk"]
    # grain 3 is in both deltas: the top one wins (and was filled with zeros around B)
    expected = apply(
        apply(base, [(GRAIN * 3, bytes(GRAIN))] + w1), [(GRAIN * 3, bytes(GRAIN))] + w2
    )
    assert chain.read(0, cap) == expected
    runs = check_runs(chain)
    sources = {r.source for r in runs}
    assert sources == {"vm-flat.vmdk", "vm-000001.vmdk", "vm-000002.vmdk"}
    # each run can be copied by ranged reads of its file
    rebuilt = bytearray()
    for r in runs:
        with open(tmp_path / r.source, "rb") as f:
            f.seek(r.source_offset)
            rebuilt += f.read(r.length)
    assert bytes(rebuilt) == expected
    top = [r for r in runs if r.source == "vm-000002.vmdk"]
    assert [(r.offset, r.length) for r in top] == [(GRAIN * 3, GRAIN), (3 * MIB, GRAIN)]


def test_unallocated_everywhere_is_zero_run(tmp_path, opener):
    make_delta(tmp_path, "solo.vmdk", None, 2 * MIB, [(MIB, b"x")])
    chain = DiskChain.open("solo.vmdk", opener)
    runs = check_runs(chain)
    assert runs[0] == Run(0, MIB, None, 0)
    assert runs[1].source == "solo.vmdk" and runs[1].length == GRAIN
    assert runs[2] == Run(MIB + GRAIN, MIB - GRAIN, None, 0)


def test_two_gb_max_extent_flat_and_sparse_pieces(tmp_path, opener):
    a, b = os.urandom(MIB), os.urandom(MIB // 2)
    (tmp_path / "d-f001.vmdk").write_bytes(a)
    (tmp_path / "d-f002.vmdk").write_bytes(b"junk" * 128 + b)  # offset 1 sector into the file
    d = new_descriptor(
        "twoGbMaxExtentFlat",
        [
            Extent("RW", MIB // 512, "FLAT", "d-f001.vmdk"),
            Extent("RW", MIB // 1024, "FLAT", "d-f002.vmdk", 1),
        ],
        capacity=MIB + MIB // 2,
    )
    (tmp_path / "d.vmdk").write_text(render(d))
    chain = DiskChain.open("d.vmdk", opener)
    assert chain.read(0, chain.capacity) == a + b
    assert check_runs(chain)[1] == Run(MIB, MIB // 2, "d-f002.vmdk", 512)

    for i, size in enumerate((MIB, MIB)):
        with SparseExtent.create(tmp_path / f"s-s00{i + 1}.vmdk", size) as ext:
            ext.write(size - 3, b"end")
    d = new_descriptor(
        "twoGbMaxExtentSparse",
        [Extent("RW", MIB // 512, "SPARSE", f"s-s00{i}.vmdk") for i in (1, 2)],
        capacity=2 * MIB,
    )
    (tmp_path / "s.vmdk").write_text(render(d))
    chain = DiskChain.open("s.vmdk", opener)
    assert chain.read(MIB - 3, 6) == b"end\0\0\0"
    assert chain.read(2 * MIB - 3, 3) == b"end"


def test_parent_hints_resolve_relative_to_the_child(tmp_path, opener):
    (tmp_path / "base").mkdir()
    (tmp_path / "clone").mkdir()
    make_flat(tmp_path / "base", "b.vmdk", b"\x07" * MIB)
    make_delta(tmp_path / "clone", "c.vmdk", "../base/b.vmdk", MIB, [(0, b"top")])
    chain = DiskChain.open("clone/c.vmdk", opener)
    assert chain.files() == ["base/b.vmdk", "base/b-flat.vmdk", "clone/c.vmdk"]
    assert chain.read(0, 4) == b"top\0" and chain.read(GRAIN, 2) == b"\x07\x07"


def test_absolute_vmfs_hint_is_passed_through(tmp_path):
    make_delta(tmp_path, "top.vmdk", "/vmfs/volumes/ds1/vm/vm.vmdk", MIB, [])
    seen = []

    def opener(name):
        seen.append(name)
        if name.startswith("/vmfs/volumes/"):
            raise FileNotFoundError(name)
        return local_opener(tmp_path)(name)

    with pytest.raises(FileNotFoundError):
        DiskChain.open("top.vmdk", opener)
    assert seen[-1] == "/vmfs/volumes/ds1/vm/vm.vmdk"


def test_zero_extent_and_smaller_parent(tmp_path, opener):
    make_flat(tmp_path, "small.vmdk", b"\x01" * MIB)
    make_delta(tmp_path, "big.vmdk", "small.vmdk", 2 * MIB, [])
    chain = DiskChain.open("big.vmdk", opener)
    runs = check_runs(chain)
    assert runs == [Run(0, MIB, "small-flat.vmdk", 0), Run(MIB, MIB, None, 0)]
    (tmp_path / "z.vmdk").write_text('version=1\ncreateType="custom"\nRW 16 ZERO\n')
    assert check_runs(DiskChain.open("z.vmdk", opener)) == [Run(0, 8192, None, 0)]


@pytest.mark.parametrize(
    "create_type, extent",
    [
        ("streamOptimized", 'SPARSE "u-s.vmdk"'),
        ("vmfsPassthroughRawDeviceMap", 'VMFSRDM "u-rdmp.vmdk"'),
        ("fullDevice", 'FLAT "/dev/sda" 0'),
    ],
)
def test_unsupported_types_are_refused(tmp_path, opener, create_type, extent):
    (tmp_path / "u.vmdk").write_text(f'version=1\ncreateType="{create_type}"\nRW 8 {extent}\n')
    with pytest.raises(VmdkError, match="unsupported"):
        DiskChain.open("u.vmdk", opener)


@pytest.mark.parametrize(
    "head, kind",
    [(b"COWD" + bytes(2044), "vmfsSparse"), ((0xCAFEBABE).to_bytes(8, "little"), "SEsparse")],
)
def test_a_delta_extent_is_not_taken_for_a_descriptor(tmp_path, opener, head, kind):
    (tmp_path / "c.vmdk").write_bytes(head.ljust(4096, b"\0"))
    with pytest.raises(VmdkError, match=f"a {kind} extent, not a descriptor"):
        DiskChain.open("c.vmdk", opener)


def test_parent_loop_is_detected(tmp_path, opener):
    make_delta(tmp_path, "a.vmdk", "b.vmdk", MIB, [])
    make_delta(tmp_path, "b.vmdk", "a.vmdk", MIB, [])
    with pytest.raises(VmdkError, match="loops"):
        DiskChain.open("a.vmdk", opener)


def test_garbage_and_huge_files_are_not_descriptors(tmp_path, opener):
    (tmp_path / "bin.vmdk").write_bytes(b"\xff\xfe" * 100)
    with pytest.raises(VmdkError, match="not a VMDK descriptor"):
        DiskChain.open("bin.vmdk", opener)
    with open(tmp_path / "big.vmdk", "wb") as f:
        f.truncate(2 * MIB)
    with pytest.raises(VmdkError, match="not a VMDK descriptor"):
        DiskChain.open("big.vmdk", opener)


def test_files_opened_once_each(tmp_path, opener):
    make_flat(tmp_path, "vm.vmdk", bytes(MIB))
    make_delta(tmp_path, "vm-000001.vmdk", "vm.vmdk", MIB, [(0, b"x")])
    chain = DiskChain.open("vm-000001.vmdk", opener)
    chain.read(0, MIB)
    chain.read(0, MIB)
    assert sorted(opener.names) == sorted(set(opener.names))


def test_many_grains_random_against_model(tmp_path, opener):
    rng = random.Random(11)
    cap = 8 * MIB
    base = rng.randbytes(cap)
    make_flat(tmp_path, "r.vmdk", base)
    writes = []
    for _ in range(40):
        off = rng.randrange(cap - GRAIN)
        writes.append((off - off % GRAIN, rng.randbytes(GRAIN)))
    make_delta(tmp_path, "r-1.vmdk", "r.vmdk", cap, writes)
    chain = DiskChain.open("r-1.vmdk", opener)
    check_runs(chain)
    assert chain.read(0, cap) == apply(base, writes)


def test_renamed_monolithic_sparse_reads_itself(tmp_path, opener):
    make_delta(tmp_path, "orig.vmdk", None, MIB, [(0, b"mine")])
    os.rename(tmp_path / "orig.vmdk", tmp_path / "renamed.vmdk")
    chain = DiskChain.open("renamed.vmdk", opener)
    assert chain.read(0, 4) == b"mine"
    assert chain.files() == ["renamed.vmdk"]


def test_parent_cid_mismatch_is_a_warning(tmp_path, opener, caplog):
    d = make_flat(tmp_path, "p.vmdk", bytes(MIB))
    make_delta(tmp_path, "ok.vmdk", "p.vmdk", MIB, [], parent_cid=d.cid)
    DiskChain.open("ok.vmdk", opener)
    assert "parentCID" not in caplog.text
    make_delta(tmp_path, "stale.vmdk", "p.vmdk", MIB, [], parent_cid=(d.cid + 1) & 0xFFFFFFF)
    assert DiskChain.open("stale.vmdk", opener).capacity == MIB
    assert "stale.vmdk: parentCID" in caplog.text


def test_latin1_descriptor_names(tmp_path, opener):
    (tmp_path / "d\xe9.bin").write_bytes(b"\x05" * 1024)
    (tmp_path / "d.vmdk").write_bytes(
        b'version=1\nencoding="windows-1252"\nCID=1\nparentCID=ffffffff\n'
        b'createType="monolithicFlat"\nRW 2 FLAT "d\xe9.bin" 0\n'
    )
    chain = DiskChain.open("d.vmdk", opener)
    assert chain.files() == ["d.vmdk", "d\xe9.bin"]
    assert chain.read(0, 1024) == b"\x05" * 1024


def test_descriptor_padded_with_nuls_and_a_stray_newline_is_read(tmp_path):
    # qemu-img sometimes pads a monolithicFlat descriptor to 512 bytes as "text\0\n\0\0...".
    from vcbproxy.vmdk.chain import DiskChain
    from vcbproxy.vmdk.io import local_opener

    (tmp_path / "d-flat.vmdk").write_bytes(b"\1" * 4096)
    text = (
        b'# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
        b'RW 8 FLAT "d-flat.vmdk" 0\n'
    )
    (tmp_path / "d.vmdk").write_bytes((text + b"\0\n").ljust(512, b"\0"))
    chain = DiskChain.open("d.vmdk", local_opener(tmp_path))
    assert chain.capacity == 4096 and chain.read(0, 4096) == b"\1" * 4096
    (tmp_path / "d.vmdk").write_bytes((text + b"\0\x7fELF").ljust(512, b"\0"))
    import pytest

    from vcbproxy.vmdk import VmdkError

    with pytest.raises(VmdkError, match="binary content"):
        DiskChain.open("d.vmdk", local_opener(tmp_path))
