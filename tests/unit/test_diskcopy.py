"""copy_runs / copy_grains: the content hash covers zeros, gaps and short reads are errors."""

import hashlib
import os
import threading
import time
from collections import namedtuple

import pytest

from vcbproxy.vmdk.copy import copy_grains, copy_runs

Run = namedtuple("Run", "offset length source source_offset")


class MemoryWriter:
    def __init__(self, capacity):
        self.data = bytearray(capacity)
        self.writes = []

    def write(self, offset, data):
        self.writes.append((offset, len(data)))
        self.data[offset : offset + len(data)] = data


def sources():
    return {"a": bytes(range(256)) * 64, "b": b"\xab" * 8192}


def stream_of(files):
    def stream(name, offset, length):
        blob = files[name][offset : offset + length]
        for i in range(0, len(blob), 1000):
            yield blob[i : i + 1000]

    return stream


def test_copy_runs_writes_data_skips_zeros_and_hashes_everything():
    files = sources()
    runs = [Run(0, 4096, "a", 0), Run(4096, 8192, None, 0), Run(12288, 4096, "b", 100)]
    writer = MemoryWriter(16384)
    result = copy_runs(runs, stream_of(files), writer, capacity=16384)
    expected = files["a"][:4096] + bytes(8192) + files["b"][100:4196]
    assert bytes(writer.data) == expected
    assert result.content_sha256 == hashlib.sha256(expected).hexdigest()
    assert result.bytes_read == 8192 and result.bytes_zero == 8192
    assert all(off < 4096 or off >= 12288 for off, _ in writer.writes)


def test_copy_runs_rejects_gaps_short_reads_and_short_maps():
    files = sources()
    with pytest.raises(ValueError, match="gap"):
        copy_runs(
            [Run(0, 10, "a", 0), Run(20, 10, "a", 0)],
            stream_of(files),
            MemoryWriter(30),
            capacity=30,
        )
    with pytest.raises(ValueError, match="short read"):
        copy_runs([Run(0, 9000, "b", 0)], stream_of(files), MemoryWriter(9000), capacity=9000)
    with pytest.raises(ValueError, match="covers"):
        copy_runs([Run(0, 10, "a", 0)], stream_of(files), MemoryWriter(20), capacity=20)


def test_copy_grains_fills_gaps_with_zeros_and_clips_the_tail():
    writer = MemoryWriter(300)
    grains = [(0, b"x" * 100), (200, b"y" * 200)]
    advanced = []
    result = copy_grains(grains, writer, capacity=300, advance=advanced.append)
    expected = b"x" * 100 + bytes(100) + b"y" * 100
    assert bytes(writer.data) == expected
    assert result.content_sha256 == hashlib.sha256(expected).hexdigest()
    assert sum(advanced) == 300
    with pytest.raises(ValueError, match="backwards"):
        copy_grains([(100, b"a"), (0, b"b")], MemoryWriter(300), capacity=300)


def _hash_threads():
    return [t for t in threading.enumerate() if t.name == "diskcopy-sha256"]


def test_hash_is_exact_with_large_chunks_and_long_zero_runs():
    # Chunks above hashlib's 2 KiB GIL threshold and zero runs longer than the zero chunk:
    # the paths where the worker thread hashes while the copy goes on.
    blob = os.urandom(3 << 20)
    files = {"a": blob}

    def stream(name, offset, length):
        data = files[name][offset : offset + length]
        for i in range(0, len(data), 256 << 10):
            yield data[i : i + (256 << 10)]

    runs = [
        Run(0, 1 << 20, "a", 0),
        Run(1 << 20, 5 << 20, None, 0),
        Run(6 << 20, 2 << 20, "a", 1 << 20),
    ]
    capacity = 8 << 20
    writer = MemoryWriter(capacity)
    result = copy_runs(runs, stream, writer, capacity=capacity)
    expected = blob[: 1 << 20] + bytes(5 << 20) + blob[1 << 20 : 3 << 20]
    assert bytes(writer.data) == expected
    assert result.content_sha256 == hashlib.sha256(expected).hexdigest()
    assert result.file_sha256 == {}
    assert _hash_threads() == []


def test_a_reused_buffer_is_hashed_as_it_was_when_yielded():
    def stream(name, offset, length):
        buf = bytearray(4096)
        for i in range(0, length, 4096):
            buf[:] = bytes([i // 4096 + 1]) * 4096
            yield buf  # the same object every time, overwritten after the consumer took it

    writer = MemoryWriter(16384)
    result = copy_runs([Run(0, 16384, "a", 0)], stream, writer, capacity=16384)
    expected = b"".join(bytes([n]) * 4096 for n in range(1, 5))
    assert bytes(writer.data) == expected
    assert result.content_sha256 == hashlib.sha256(expected).hexdigest()


def test_a_failing_read_stops_the_hashing_thread():
    def stream(name, offset, length):
        yield os.urandom(8192)
        raise OSError("connection reset")

    # 8 GiB of zeros queued ahead of the failure: hashing them (seconds) is abandoned.
    runs = [Run(0, 8 << 30, None, 0), Run(8 << 30, 16384, "a", 0)]
    started = time.monotonic()
    with pytest.raises(OSError, match="reset"):
        copy_runs(runs, stream, _NullWriter(), capacity=(8 << 30) + 16384)
    assert time.monotonic() - started < 2.0
    assert _hash_threads() == []


class _NullWriter:
    def write(self, offset, data):
        pass


class FlatLikeWriter(MemoryWriter):
    flat_name = "disk-flat.vmdk"  # what FlatWriter exposes: its extent is the raw disk


def test_a_raw_flat_extent_reports_its_file_hash():
    files = sources()
    writer = FlatLikeWriter(8192)
    result = copy_runs(
        [Run(0, 4096, "a", 0), Run(4096, 4096, None, 0)], stream_of(files), writer, capacity=8192
    )
    assert result.file_sha256 == {"disk-flat.vmdk": result.content_sha256}
    grains = copy_grains([(0, b"z" * 512)], FlatLikeWriter(1024), capacity=1024)
    assert grains.file_sha256 == {
        "disk-flat.vmdk": hashlib.sha256(b"z" * 512 + bytes(512)).hexdigest()
    }


def test_only_areas_zeroes_everything_outside_the_allocation_map():
    from vcbproxy.transport.chain import only_areas
    from vcbproxy.vmdk.chain import Run

    runs = [Run(0, 100, "a", 1000), Run(100, 50, None, 0), Run(150, 100, "b", 0)]
    out = list(only_areas(runs, [(10, 20), (90, 70), (240, 5)]))
    assert [(r.offset, r.length, r.source, r.source_offset) for r in out if r.source] == [
        (10, 20, "a", 1010),
        (90, 10, "a", 1090),
        (150, 10, "b", 0),
        (240, 5, "b", 90),
    ]
    # the runs still tile the disk, with zeros where nothing is allocated
    position = 0
    for r in out:
        assert r.offset == position
        position += r.length
    assert position == 250
    assert [r.source for r in only_areas(runs, [])] == [None, None, None]


def test_coalesce_fills_holes_shorter_than_a_request():
    from vcbproxy.transport.chain import coalesce

    areas = [(0, 10), (15, 5), (40, 10), (100, 1)]
    assert coalesce(areas, 0) == areas
    assert coalesce(areas, 6) == [(0, 20), (40, 10), (100, 1)]
    assert coalesce(areas, 50) == [(0, 50), (100, 1)]
    assert coalesce(areas, 51) == [(0, 101)]
    assert coalesce([], 10) == []


def _copy_threads():
    return [t for t in threading.enumerate() if t.name.startswith("diskcopy-")]


def test_a_failing_write_stops_the_copy_and_its_threads():
    # The writer runs in a thread of its own: its error must still end the copy, in the
    # copying thread, and no thread may be left behind.
    class FailingWriter(MemoryWriter):
        def write(self, offset, data):
            if offset >= 8192:
                raise OSError(28, "No space left on device")
            super().write(offset, data)

    blob = os.urandom(1 << 20)
    with pytest.raises(OSError, match="No space"):
        copy_runs(
            [Run(0, 1 << 20, "a", 0)],
            stream_of({"a": blob}),
            FailingWriter(1 << 20),
            capacity=1 << 20,
        )
    assert _copy_threads() == []


def test_every_write_has_landed_when_the_copy_returns():
    # close() follows copy_runs at once (fsync, rename): the background writer must be done.
    class SlowWriter(MemoryWriter):
        def write(self, offset, data):
            time.sleep(0.001)
            super().write(offset, data)

    blob = os.urandom(256 << 10)
    writer = SlowWriter(len(blob))
    copy_runs([Run(0, len(blob), "a", 0)], stream_of({"a": blob}), writer, capacity=len(blob))
    assert bytes(writer.data) == blob
    assert _copy_threads() == []
