"""Hosted sparse extents: grain allocation, zero handling, tables, ranged remote reads."""

import os
import random

import pytest

from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.io import LocalFile
from vcbproxy.vmdk.sparse import SECTOR, SparseExtent, SparseHeader

MIB = 1 << 20
GRAIN = 64 * 1024


class CountingReader:
    """A RandomAccess that records every ranged read (stands in for an HTTP file)."""

    def __init__(self, path):
        self._f = LocalFile(path)
        self.size = self._f.size
        self.reads = []

    def pread(self, offset, length):
        self.reads.append((offset, length))
        return self._f.pread(offset, length)

    def stream(self, offset, length, chunk=1 << 20):
        yield self.pread(offset, length)

    def close(self):
        self._f.close()


def test_random_writes_read_back_and_survive_reopen(tmp_path):
    cap = 3 * MIB + 7 * SECTOR  # last grain is partial
    path = tmp_path / "d.vmdk"
    expected = bytearray(cap)
    rng = random.Random(5)
    with SparseExtent.create(path, cap) as ext:
        for _ in range(25):
            off = rng.randrange(cap - 1)
            data = rng.randbytes(rng.randrange(1, min(150_000, cap - off)))
            ext.write(off, data)
            expected[off : off + len(data)] = data
        assert ext.read(0, cap) == expected
    with SparseExtent.open(path) as ext:
        assert ext.capacity == cap and ext.grain_bytes == GRAIN
        assert ext.read(0, cap) == expected
        assert ext.read(cap - 100, 100) == expected[-100:]
        assert ext.embedded_descriptor() is None


def test_zero_writes_do_not_allocate_unless_forced(tmp_path):
    with SparseExtent.create(tmp_path / "z.vmdk", 2 * MIB) as ext:
        ext.write(0, bytes(GRAIN * 3))
        assert not any(ext.is_allocated(g) for g in range(32))
        ext.write(GRAIN, bytes(10), force=True)
        assert ext.is_allocated(1) and not ext.is_allocated(0)
        assert ext.read(0, 3 * GRAIN) == bytes(3 * GRAIN)
        # zeros over an allocated grain must overwrite its data
        ext.write(5 * GRAIN, b"\x01" * GRAIN)
        ext.write(5 * GRAIN + 10, bytes(20))
        assert ext.read(5 * GRAIN, 40) == b"\x01" * 10 + bytes(20) + b"\x01" * 10


def test_allocated_ranges_are_merged(tmp_path):
    with SparseExtent.create(tmp_path / "a.vmdk", 4 * MIB) as ext:
        ext.write(GRAIN + 5, b"x")  # grain 1
        ext.write(2 * GRAIN, b"y" * (GRAIN + 1))  # grains 2 and 3
        ext.write(10 * GRAIN, b"z")
        assert ext.allocated_ranges() == [(GRAIN, 3 * GRAIN), (10 * GRAIN, GRAIN)]


def test_partial_grain_is_read_modify_write(tmp_path):
    with SparseExtent.create(tmp_path / "p.vmdk", MIB) as ext:
        ext.write(100, b"abc")
        ext.write(200, b"def")
        assert ext.read(98, 108) == b"\0\0abc" + bytes(97) + b"def" + bytes(3)
        assert ext.allocated_ranges() == [(0, GRAIN)]


def test_embedded_descriptor_and_header_layout(tmp_path):
    path = tmp_path / "m.vmdk"
    SparseExtent.create(path, 10 * MIB, descriptor="version=1\n").close()
    raw = path.read_bytes()
    assert raw[:4] == b"KDMV"
    h = SparseHeader.unpack(raw[:512])
    assert h.version == 1 and h.flags & 3 == 3
    assert h.grain_size == 128 and h.gtes_per_gt == 512 and h.capacity == 10 * MIB // 512
    assert h.descriptor_offset == 1 and h.descriptor_size >= 1
    assert h.overhead % 128 == 0
    assert h.rgd_offset < h.gd_offset < h.overhead
    assert raw[h.descriptor_offset * 512 :].startswith(b"version=1\n\0")
    with SparseExtent.open(path) as ext:
        assert ext.embedded_descriptor() == "version=1\n"


def test_redundant_grain_tables_match_primary(tmp_path):
    path = tmp_path / "r.vmdk"
    with SparseExtent.create(path, 40 * MIB) as ext:  # two GTs
        ext.write(0, b"a")
        ext.write(35 * MIB, b"b")
    raw = path.read_bytes()
    h = SparseHeader.unpack(raw[:512])
    for gt in range(2):
        gd = int.from_bytes(raw[h.gd_offset * 512 + 4 * gt :][:4], "little")
        rgd = int.from_bytes(raw[h.rgd_offset * 512 + 4 * gt :][:4], "little")
        assert gd != rgd
        assert raw[gd * 512 : gd * 512 + 2048] == raw[rgd * 512 : rgd * 512 + 2048]
        assert raw[gd * 512 : gd * 512 + 2048] != bytes(2048)


def test_from_reader_caches_directory_and_tables(tmp_path):
    path = tmp_path / "remote.vmdk"
    with SparseExtent.create(path, 64 * MIB) as ext:
        for i in range(0, 64 * MIB, 4 * MIB):
            ext.write(i, b"q" * 3000)
    reader = CountingReader(path)
    ext = SparseExtent.from_reader(reader)
    ranges = ext.allocated_ranges()
    assert ranges == [(i, GRAIN) for i in range(0, 64 * MIB, 4 * MIB)]
    # header + GD + both (adjacent) GTs in one request, and nothing read twice
    assert len(reader.reads) == 3
    assert reader.reads[2][1] == 2 * 2048
    assert len(set(reader.reads)) == len(reader.reads)
    before = len(reader.reads)
    assert ext.read(4 * MIB, 3000) == b"q" * 3000
    assert len(reader.reads) == before + 1
    with pytest.raises(VmdkError, match="read-only"):
        ext.write(0, b"x")
    ext.close()
    reader.close()


def test_grain_tables_are_batched_but_bounded(tmp_path):
    path = tmp_path / "many.vmdk"
    cap = 100 * 32 * MIB  # 100 grain tables
    with SparseExtent.create(path, cap) as ext:
        ext.write(cap - 1, b"z")
        ext.write(0, b"a")
    reader = CountingReader(path)
    ext = SparseExtent.from_reader(reader)
    assert ext.allocated_ranges() == [(0, GRAIN), (cap - GRAIN, GRAIN)]
    gt_reads = reader.reads[2:]
    assert [n for _, n in gt_reads] == [64 * 2048, 36 * 2048]
    reader.close()


def test_contiguous_grains_are_read_in_one_request(tmp_path):
    path = tmp_path / "c.vmdk"
    with SparseExtent.create(path, 4 * MIB) as ext:
        ext.write(0, os.urandom(4 * GRAIN))
    reader = CountingReader(path)
    ext = SparseExtent.from_reader(reader)
    ext.allocated_ranges()
    reader.reads.clear()
    ext.read(0, 4 * GRAIN)
    assert reader.reads == [(ext.grain_offset(0), 4 * GRAIN)]
    reader.close()


def test_reopen_writable_appends_after_existing_grains(tmp_path):
    path = tmp_path / "w.vmdk"
    with SparseExtent.create(path, MIB) as ext:
        ext.write(0, b"first")
    with SparseExtent.open(path, writable=True) as ext:
        ext.write(GRAIN * 3, b"second")
    with SparseExtent.open(path) as ext:
        assert ext.read(0, 5) == b"first" and ext.read(GRAIN * 3, 6) == b"second"
        assert ext.grain_offset(3) > ext.grain_offset(0)


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda b: b"XXXX" + b[4:], "KDMV"),
        (lambda b: b[:4] + (9).to_bytes(4, "little") + b[8:], "version"),
        (lambda b: b[:100], "too short"),
    ],
)
def test_bad_headers_are_refused(tmp_path, mutate, words):
    path = tmp_path / "bad.vmdk"
    SparseExtent.create(path, MIB).close()
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(VmdkError, match=words):
        SparseExtent.open(path)


def test_out_of_range_and_bad_capacity(tmp_path):
    with pytest.raises(VmdkError, match="multiple of 512"):
        SparseExtent.create(tmp_path / "x.vmdk", 1000)
    with SparseExtent.create(tmp_path / "y.vmdk", MIB) as ext:
        with pytest.raises(VmdkError, match="outside"):
            ext.write(MIB - 1, b"ab")
        with pytest.raises(VmdkError, match="outside"):
            ext.read(MIB, 1)


def test_truncated_file_is_reported(tmp_path):
    path = tmp_path / "t.vmdk"
    with SparseExtent.create(path, MIB) as ext:
        ext.write(0, b"x" * GRAIN)
        where = ext.grain_offset(0)
    os.truncate(path, where + 100)
    with SparseExtent.open(path) as ext, pytest.raises(VmdkError, match="beyond the end"):
        ext.read(0, GRAIN)


def test_next_allocated_skips_empty_tables(tmp_path):
    with SparseExtent.create(tmp_path / "n.vmdk", 200 * MIB) as ext:
        ext.write(5 * GRAIN, b"a")
        ext.write(150 * MIB, b"b")
        g2 = 150 * MIB // GRAIN
        assert ext.next_allocated(0, ext.num_grains) == 5
        assert ext.next_allocated(5, ext.num_grains) == 5
        assert ext.next_allocated(6, ext.num_grains) == g2
        assert ext.next_allocated(6, 100) == 100
        assert ext.next_allocated(g2 + 1, ext.num_grains) == ext.num_grains
