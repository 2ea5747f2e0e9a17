"""ReadPlan: a disk's runs served from one stream per layer file instead of a request per run."""

from __future__ import annotations

import random

import pytest

from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.chain import Run, read_areas
from vcbproxy.vmdk.readplan import ReadPlan, planned


class File:
    def __init__(self, data: bytes):
        self.data = data
        self.size = len(data)
        self.streams: list[tuple[int, int]] = []

    def stream(self, offset, length, chunk=1 << 20):
        self.streams.append((offset, length))
        for pos in range(offset, offset + length, 7000):  # odd chunks: pieces cross them
            yield self.data[pos : min(offset + length, pos + 7000)]

    def pread(self, offset, length):
        return self.data[offset : offset + length]


class Files:
    def __init__(self, **files: bytes):
        self.files = {name: File(data) for name, data in files.items()}

    def open(self, name):
        return self.files[name]

    def __call__(self, name, offset, length):
        return self.open(name).stream(offset, length)


def interleaved(rng, base_size=1 << 20):
    """Runs alternating between a base and a delta, as a disk with a snapshot maps."""
    runs, pos, dpos = [], 0, 0
    while pos < base_size:
        n = rng.choice([512, 4096, 65536])
        n = min(n, base_size - pos)
        if rng.random() < 0.3:
            runs.append(Run(pos, n, "delta", dpos))
            dpos += n + rng.choice([0, 0, 512, 200_000])  # the delta's file has other grains
        elif rng.random() < 0.1:
            runs.append(Run(pos, n, None, 0))
        else:
            runs.append(Run(pos, n, "base", pos))
        pos += n
    return runs, dpos


def expected(files, runs):
    out = bytearray()
    for r in runs:
        out += (
            bytes(r.length)
            if r.source is None
            else files.open(r.source).pread(r.source_offset, r.length)
        )
    return bytes(out)


@pytest.mark.parametrize("seed", range(5))
def test_plan_serves_the_same_bytes_with_few_streams(seed):
    rng = random.Random(seed)
    runs, delta_size = interleaved(rng)
    files = Files(base=rng.randbytes(1 << 20), delta=rng.randbytes(delta_size + 65536))
    plan = ReadPlan(files, gap=65536)
    got = bytearray()
    for _offset, piece in read_areas(plan.runs(runs), plan, [(0, 1 << 20)]):
        got += bytes(piece) if isinstance(piece, int) else piece
    assert bytes(got) == expected(files, runs)
    # one stream per file, and a new one only where the file's next range is behind or
    # more than 64 KiB ahead
    want = 0
    for name in ("base", "delta"):
        mine = [r for r in runs if r.source == name]
        want += 1 + sum(
            1
            for a, b in zip(mine, mine[1:], strict=False)
            if not 0 <= b.source_offset - (a.source_offset + a.length) <= 65536
        )
    streams = sum(len(f.streams) for f in files.files.values())
    assert streams == want
    assert streams < sum(1 for r in runs if r.source) / 2


def test_gaps_longer_than_a_request_start_a_new_stream():
    files = Files(f=bytes(range(256)) * 4096)
    runs = [Run(0, 100, "f", 0), Run(100, 100, "f", 150), Run(200, 100, "f", 100_000)]
    plan = ReadPlan(files, gap=1000)
    out = b"".join(c for r in plan.runs(runs) for c in plan(r.source, r.source_offset, r.length))
    assert out == expected(files, runs)
    assert files.files["f"].streams == [(0, 250), (100_000, 100)]


def test_a_run_behind_the_stream_gets_its_own_stream():
    files = Files(f=bytes(range(256)) * 16)
    runs = [Run(0, 100, "f", 500), Run(100, 100, "f", 0)]  # backwards in the file
    plan = ReadPlan(files, gap=4096)
    out = b"".join(c for r in plan.runs(runs) for c in plan(r.source, r.source_offset, r.length))
    assert out == expected(files, runs)
    assert files.files["f"].streams == [(500, 100), (0, 100)]


def test_a_file_shorter_than_its_runs_is_an_error():
    files = Files(f=b"x" * 100)
    plan = ReadPlan(files, gap=4096)
    runs = [Run(0, 200, "f", 0)]
    with pytest.raises(VmdkError, match="ended"):
        for r in plan.runs(runs):
            list(plan(r.source, r.source_offset, r.length))


def test_without_a_request_cost_nothing_is_planned():
    files = Files(f=b"x")
    runs = [Run(0, 1, "f", 0)]
    out_runs, reader = planned(runs, files, 0)
    assert out_runs is runs and reader is files
