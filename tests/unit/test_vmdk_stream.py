"""streamOptimized: compressed grains with markers, read strictly front to back."""

import io
import os
import random
import struct
import zlib

import pytest

from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.descriptor import parse
from vcbproxy.vmdk.sparse import SparseExtent, SparseHeader
from vcbproxy.vmdk.stream import StreamOptimizedWriter, iter_stream_optimized

MIB = 1 << 20
GRAIN = 64 * 1024


class Trickle:
    """A socket-like reader: short reads, no seek, counts bytes (no tell/seek attributes)."""

    def __init__(self, data, step=1000):
        self._data, self._pos, self._step = data, 0, step

    def read(self, n):
        n = min(n, self._step)
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out


def build(cap, writes, **kw):
    out = io.BytesIO()
    w = StreamOptimizedWriter(out, cap, **kw)
    for off, data in writes:
        w.write(off, data)
    w.finish()
    return out.getvalue()


def collect(reader):
    cap, grains = iter_stream_optimized(reader)
    image = bytearray(cap)
    offsets = []
    for off, data in grains:
        offsets.append(off)
        image[off : off + len(data)] = data
    return bytes(image), offsets


def test_round_trip_through_short_reads():
    rng = random.Random(9)
    cap = 40 * MIB + 3 * 512  # more than one grain table, partial last grain
    writes, pos = [], 0
    while pos < cap - 300_000:
        pos += rng.choice([0, GRAIN, 5 * MIB])
        data = rng.randbytes(rng.randrange(1, 300_000))
        if pos + len(data) > cap:
            break
        writes.append((pos, data))
        pos += len(data)
    writes.append((cap - 5, b"tail!"))
    raw = build(cap, writes)
    expected = bytearray(cap)
    for off, data in writes:
        expected[off : off + len(data)] = data
    image, offsets = collect(Trickle(raw))
    assert image == expected
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_layout_header_footer_and_eos():
    raw = build(4 * MIB, [(GRAIN, os.urandom(GRAIN))], descriptor="version=1\n")
    assert len(raw) % 512 == 0
    h = SparseHeader.unpack(raw[:512])
    assert h.version == 3 and h.flags == 0x30001 and h.compress == 1
    assert h.gd_offset == 0xFFFFFFFFFFFFFFFF
    assert raw[512:].startswith(b"version=1\n\0")
    assert raw[-512:] == bytes(512)  # EOS
    footer_marker = raw[-1536:-1024]
    assert struct.unpack_from("<QII", footer_marker) == (1, 0, 3)
    footer = SparseHeader.unpack(raw[-1024:-512])
    assert footer.gd_offset != h.gd_offset
    gd = int.from_bytes(raw[footer.gd_offset * 512 :][:4], "little")
    gt = raw[gd * 512 : gd * 512 + 2048]
    grain_sector = int.from_bytes(gt[4:8], "little")  # grain 1
    lba, size = struct.unpack_from("<QI", raw, grain_sector * 512)
    assert lba == 128 and len(zlib.decompress(raw[grain_sector * 512 + 12 :][:size])) == GRAIN
    # as a random-access extent it refuses politely (GD is in the footer)
    with pytest.raises(VmdkError, match="sequentially"):
        SparseExtent.from_reader(_RA(raw)).grain_offset(0)


class _RA:
    def __init__(self, raw):
        self.raw, self.size = raw, len(raw)

    def pread(self, off, n):
        return self.raw[off : off + n]


def test_zero_grains_are_not_stored():
    raw = build(64 * MIB, [(0, bytes(64 * MIB))])
    assert len(raw) < 80 * 1024  # header + descriptor padding to one grain, GD, footer
    assert collect(io.BytesIO(raw))[1] == []


def test_default_descriptor_names_stream_optimized():
    raw = build(MIB, [])
    h = SparseHeader.unpack(raw[:512])
    text = raw[512 : 512 + h.descriptor_size * 512].split(b"\0")[0].decode()
    d = parse(text)
    assert d.create_type == "streamOptimized" and d.capacity == MIB


def test_writes_must_go_forward():
    w = StreamOptimizedWriter(io.BytesIO(), MIB)
    w.write(GRAIN * 2, b"x")
    with pytest.raises(VmdkError, match="forward"):
        w.write(GRAIN, b"y")
    with pytest.raises(VmdkError, match="beyond"):
        w.write(MIB, b"z")


def test_truncated_stream_is_an_error():
    raw = build(MIB, [(0, os.urandom(GRAIN))])
    cut = raw[: 128 * 512 + 600]  # inside the first grain
    with pytest.raises(VmdkError, match="ends inside a grain"):
        collect(io.BytesIO(cut))


def test_corrupt_grain_is_an_error():
    raw = bytearray(build(MIB, [(0, os.urandom(GRAIN))]))
    raw[128 * 512 + 20 : 128 * 512 + 40] = bytes(20)
    with pytest.raises(VmdkError, match="corrupt"):
        collect(io.BytesIO(bytes(raw)))


def test_non_stream_files_are_refused(tmp_path):
    SparseExtent.create(tmp_path / "s.vmdk", MIB).close()
    with open(tmp_path / "s.vmdk", "rb") as f, pytest.raises(VmdkError, match="streamOptimized"):
        iter_stream_optimized(f)
    with pytest.raises(VmdkError, match="KDMV"):
        iter_stream_optimized(io.BytesIO(b"<html>" + bytes(600)))
