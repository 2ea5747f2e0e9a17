"""Output formats: every writer produces a disk our chain reader reads back byte for byte."""

import io
import os
import random

import pytest

from vcbproxy.errors import StagingError
from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.chain import DiskChain
from vcbproxy.vmdk.descriptor import parse
from vcbproxy.vmdk.io import local_opener
from vcbproxy.vmdk.sparse import SparseExtent
from vcbproxy.vmdk.stream import iter_stream_optimized
from vcbproxy.vmdk.writers import FORMATS, SplitSparseWriter, open_writer

MIB = 1 << 20
GRAIN = 64 * 1024


def sample_writes(cap, seed=3):
    """Increasing, non-contiguous writes with gaps, zero chunks and unaligned edges."""
    rng = random.Random(seed)
    writes, pos = [], 0
    while True:
        pos += rng.choice([0, 0, 512, 777, GRAIN, 3 * GRAIN + 5])
        n = rng.choice([100, 4096, GRAIN, 200_000])
        if pos + n > cap:
            break
        data = bytes(n) if rng.random() < 0.2 else rng.randbytes(n)
        writes.append((pos, data))
        pos += n
    return writes


def model(cap, writes):
    out = bytearray(cap)
    for off, data in writes:
        out[off : off + len(data)] = data
    return bytes(out)


def read_back(directory, files):
    if parse_is_stream(directory / files[0]):
        with open(directory / files[0], "rb") as f:
            cap, grains = iter_stream_optimized(f)
            out = bytearray(cap)
            for off, data in grains:
                out[off : off + len(data)] = data
        return bytes(out)
    handles = []

    def opener(name):
        handles.append(local_opener(directory)(name))
        return handles[-1]

    try:
        chain = DiskChain.open(files[0], opener)
        return chain.read(0, chain.capacity)
    finally:
        for h in handles:
            h.close()


def parse_is_stream(path):
    with open(path, "rb") as f:
        head = f.read(512)
    return head[:4] == b"KDMV" and int.from_bytes(head[8:12], "little") & (1 << 16)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path, fmt):
    cap = 5 * MIB + 1024
    writes = sample_writes(cap)
    w = open_writer(fmt, tmp_path, "disk", cap, uuid="6000c29a-1234-5678-9abc-def012345678")
    for off, data in writes:
        w.write(off, data)
    files = w.close()
    assert files[0] == "disk.vmdk"
    assert sorted(os.listdir(tmp_path)) == sorted(files)  # no partials left
    assert read_back(tmp_path, files) == model(cap, writes)


def test_file_names_per_format(tmp_path):
    names = {}
    for fmt in FORMATS:
        d = tmp_path / fmt
        d.mkdir()
        names[fmt] = open_writer(fmt, d, "vm_1", MIB).close()
    assert names == {
        "2gbsparse": ["vm_1.vmdk", "vm_1-s001.vmdk"],
        "monolithic": ["vm_1.vmdk"],
        "flat": ["vm_1.vmdk", "vm_1-flat.vmdk"],
        "stream": ["vm_1.vmdk"],
    }
    desc = parse((tmp_path / "flat" / "vm_1.vmdk").read_text())
    assert desc.create_type == "monolithicFlat" and desc.capacity == MIB
    assert desc.ddb["adapterType"] == "lsilogic"
    assert (tmp_path / "flat" / "vm_1-flat.vmdk").stat().st_size == MIB


def test_files_appear_only_on_close(tmp_path):
    w = open_writer("flat", tmp_path, "d", MIB)
    w.write(0, b"x" * 1000)
    assert sorted(os.listdir(tmp_path)) == ["d-flat.vmdk.partial"]
    assert w.close() == ["d.vmdk", "d-flat.vmdk"]
    assert sorted(os.listdir(tmp_path)) == ["d-flat.vmdk", "d.vmdk"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_abort_removes_partials(tmp_path, fmt):
    w = open_writer(fmt, tmp_path, "d", 3 * MIB)
    w.write(MIB, os.urandom(GRAIN))
    assert os.listdir(tmp_path)
    w.abort()
    assert os.listdir(tmp_path) == []
    w.abort()  # idempotent


def test_flat_keeps_holes(tmp_path):
    w = open_writer("flat", tmp_path, "h", 64 * MIB)
    w.write(0, bytes(32 * MIB))
    w.write(63 * MIB, b"x" * MIB)
    w.close()
    st = (tmp_path / "h-flat.vmdk").stat()
    assert st.st_size == 64 * MIB
    assert st.st_blocks * 512 < 8 * MIB


def test_zero_data_is_not_stored_in_sparse(tmp_path):
    w = open_writer("monolithic", tmp_path, "z", 16 * MIB)
    w.write(0, bytes(16 * MIB))
    w.close()
    with SparseExtent.open(tmp_path / "z.vmdk") as ext:
        assert ext.allocated_ranges() == []


def test_split_extents_and_descriptor(tmp_path):
    # 2.5 extents with a small split size; only the write into the middle one allocates
    w = SplitSparseWriter(
        tmp_path, "s", 5 * MIB, uuid=None, adapter="lsilogic", extent_bytes=2 * MIB
    )
    w.write(3 * MIB - 10, b"abcdefghijklmnopqrst")
    w.write(5 * MIB - 1, b"!")
    files = w.close()
    assert files == ["s.vmdk", "s-s001.vmdk", "s-s002.vmdk", "s-s003.vmdk"]
    d = parse((tmp_path / "s.vmdk").read_text())
    assert d.create_type == "twoGbMaxExtentSparse"
    assert [(e.sectors, e.filename) for e in d.extents] == [
        (4096, "s-s001.vmdk"),
        (4096, "s-s002.vmdk"),
        (2048, "s-s003.vmdk"),
    ]
    with SparseExtent.open(tmp_path / "s-s001.vmdk") as ext:
        assert ext.allocated_ranges() == []
    data = read_back(tmp_path, files)
    assert data[3 * MIB - 10 : 3 * MIB + 10] == b"abcdefghijklmnopqrst"
    assert data[-1:] == b"!"


def test_write_order_and_range_are_checked(tmp_path):
    w = open_writer("2gbsparse", tmp_path, "o", MIB)
    w.write(1000, b"x")
    with pytest.raises(VmdkError, match="forward"):
        w.write(10, b"y")
    with pytest.raises(VmdkError, match="beyond"):
        w.write(MIB - 1, b"yy")
    w.abort()


def test_bad_format_and_capacity(tmp_path):
    with pytest.raises(VmdkError, match="2gbsparse, monolithic, flat, stream"):
        open_writer("qcow2", tmp_path, "x", MIB)
    with pytest.raises(VmdkError, match="multiple of 512"):
        open_writer("flat", tmp_path, "x", 1000)


def test_memory_is_flat_for_a_big_sparse_disk(tmp_path):
    """A 100 GiB 2gbsparse disk: only one extent's tables are held, files stay small."""
    import tracemalloc

    tracemalloc.start()
    w = open_writer("2gbsparse", tmp_path, "big", 100 * 1024**3)
    for gib in range(0, 100, 10):
        w.write(gib * 1024**3, b"\x01" * GRAIN)
    files = w.close()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(files) == 1 + 51
    assert peak < 8 * MIB
    total = sum((tmp_path / f).stat().st_blocks * 512 for f in files)
    assert total < 64 * MIB


def test_stream_writer_output_is_sequential(tmp_path):
    """The stream writer only appends: it can write to a pipe or a socket."""

    class AppendOnly(io.RawIOBase):
        def __init__(self):
            self.buf = bytearray()

        def writable(self):
            return True

        def write(self, b):
            self.buf += b
            return len(b)

    from vcbproxy.vmdk.stream import StreamOptimizedWriter

    sink = AppendOnly()
    w = StreamOptimizedWriter(sink, MIB)
    w.write(GRAIN, b"hello")
    w.close()
    cap, grains = iter_stream_optimized(io.BytesIO(bytes(sink.buf)))
    assert cap == MIB
    assert [(o, d[:5]) for o, d in grains] == [(GRAIN, b"hello")]


@pytest.mark.parametrize("fmt", FORMATS)
def test_disk_pieces_reads_every_format_in_order(tmp_path, fmt):
    from vcbproxy.vmdk.content import disk_pieces

    cap = 3 * MIB
    writes = sample_writes(cap, seed=8)
    w = open_writer(fmt, tmp_path, "d", cap)
    for off, data in writes:
        w.write(off, data)
    files = w.close()
    handles = []

    def opener(name):
        handles.append(local_opener(tmp_path)(name))
        return handles[-1]

    capacity, pieces = disk_pieces(files[0], opener)
    image, pos = bytearray(), 0
    for off, piece in pieces:
        assert off == pos
        image += bytes(piece) if isinstance(piece, int) else piece
        pos = len(image)
    for h in handles:
        h.close()
    assert capacity == cap and bytes(image) == model(cap, writes)


def test_disk_pieces_reports_a_truncated_extent(tmp_path):
    from vcbproxy.vmdk.content import disk_pieces

    w = open_writer("flat", tmp_path, "t", MIB)
    w.write(0, b"x" * MIB)
    w.close()
    os.truncate(tmp_path / "t-flat.vmdk", MIB // 2)
    opener = local_opener(tmp_path)
    _, pieces = disk_pieces("t.vmdk", opener)
    with pytest.raises(VmdkError, match="ends before"):
        list(pieces)


def test_disk_pieces_never_read_the_holes_of_a_flat_extent(tmp_path):
    """verify and restore read a staged flat disk through disk_pieces: its holes come back as
    zero runs (never read), its data as bytes."""
    from vcbproxy.vmdk.content import disk_pieces
    from vcbproxy.vmdk.io import OpenFiles

    cap = 8 * MIB
    w = open_writer("flat", tmp_path, "h", cap)
    w.write(2 * MIB, b"d" * MIB)
    w.close()
    with OpenFiles(local_opener(tmp_path)) as files:
        _, pieces = disk_pieces("h.vmdk", files.open)
        data = [(off, len(p)) for off, p in pieces if not isinstance(p, int)]
    assert sum(n for _, n in data) == MIB and data[0][0] == 2 * MIB


@pytest.mark.parametrize("fmt", ["flat", "monolithic", "2gbsparse"])
def test_writeback_starts_while_writing_and_its_errors_fail_the_copy(tmp_path, fmt, monkeypatch):
    """The storage is told to write every WRITEBACK_EVERY bytes, from a worker thread; an
    error it meets fails the copy (Linux reports a write error to one sync call only)."""
    import time

    from vcbproxy.vmdk import writers

    monkeypatch.setattr(writers, "WRITEBACK_EVERY", 1 << 20)
    synced = []
    real = os.fdatasync
    monkeypatch.setattr(writers.os, "fdatasync", lambda fd: (synced.append(fd), real(fd)))
    cap = 8 << 20
    data = bytes(range(256)) * (1 << 12)  # 1 MiB, no zeros
    w = open_writer(fmt, tmp_path, "d", cap)
    for i in range(6):
        w.write(i << 20, data)
    deadline = time.monotonic() + 10
    while not synced and time.monotonic() < deadline:  # the worker, not close(), syncs
        time.sleep(0.01)
    assert synced
    files = w.close()
    assert read_back(tmp_path, files)[: 6 << 20] == data * 6

    def failing(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(writers.os, "fdatasync", failing)
    (tmp_path / "x").mkdir()
    w = open_writer(fmt, tmp_path / "x", "d", cap)
    # A staging failure (exit 14) naming the file, not a bare OSError ("a bug", exit 1).
    with pytest.raises(StagingError, match=r"cannot write .*/x/d.*Input/output error"):
        for i in range(8):  # fails mid-copy or at close
            w.write(i << 20, data)
            time.sleep(0.05)
        w.close()
    w.abort()
    assert not list((tmp_path / "x").iterdir())  # nothing left behind
