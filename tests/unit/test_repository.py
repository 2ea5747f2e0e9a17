"""The CBT repository on disk: runs appear only when committed, extents replay exactly,
verify names what is damaged. Pure file-system logic, no server."""

from __future__ import annotations

import json
import os
from collections import namedtuple

import pytest

from vcbproxy import errors
from vcbproxy.repository.extents import ExtentWriter, apply_extents
from vcbproxy.repository.store import Repository
from vcbproxy.repository.verify import verify_repository
from vcbproxy.vmdk.chain import read_areas

Run = namedtuple("Run", "offset length source source_offset")


def commit_run(repo, uuid, writes, kind="full", capacity=1 << 20):
    writer = repo.new_run(uuid)
    out = ExtentWriter(writer.file("disk-2000.data"))
    for offset, data in writes:
        if isinstance(data, int):
            out.zeros(offset, data)
        else:
            out.data(offset, data)
    entry = {"key": 2000, "device": "scsi0:0", "capacity": capacity, "kind": kind, **out.commit()}
    (writer.path / "config").mkdir()
    return writer.commit(
        {"run": writer.number, "vm": {"name": "web01", "uuid": uuid}, "disks": [entry]}
    )


def test_runs_are_numbered_and_only_committed_runs_exist(tmp_path):
    repo = Repository.open(tmp_path / "r", create=True)
    first = commit_run(repo, "u1", [(0, b"a" * 4096)])
    pending = repo.new_run("u1")
    assert first.number == 1 and pending.number == 2
    assert [r.number for r in repo.runs("u1")] == [1]
    with repo.locked("test"):  # a crashed run is discarded under the lock
        pass
    assert not pending.path.exists()
    assert repo.resolve_vm(None) == "u1" and repo.resolve_vm("web01") == "u1"


def test_open_refuses_foreign_directories(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("mine")
    with pytest.raises(errors.StagingError):
        Repository.open(tmp_path / "x", create=True)
    with pytest.raises(errors.NotFoundError):
        Repository.open(tmp_path / "x")


def test_full_then_incremental_replays_to_the_exact_image(tmp_path):
    repo = Repository.open(tmp_path / "r", create=True)
    a, b = os.urandom(8192), os.urandom(4096)
    commit_run(repo, "u1", [(0, a), (65536, b)])
    commit_run(repo, "u1", [(4096, b"\x07" * 4096), (65536, 4096)], kind="incremental")
    image = tmp_path / "img"
    fd = os.open(image, os.O_RDWR | os.O_CREAT)
    os.ftruncate(fd, 1 << 20)
    for info in repo.runs("u1"):
        apply_extents(info.path, info.load()["disks"][0], fd)
    os.close(fd)
    expected = bytearray(1 << 20)
    expected[0:8192] = a
    expected[4096:8192] = b"\x07" * 4096
    assert image.read_bytes() == bytes(expected)
    entry = repo.runs("u1")[1].load()["disks"][0]
    assert entry["extents"] == [[4096, 4096, "d"], [65536, 4096, "z"]]
    assert entry["data_bytes"] == 4096 and entry["zero_bytes"] == 4096


def test_verify_names_flipped_missing_and_truncated_data(tmp_path):
    repo = Repository.open(tmp_path / "r", create=True)
    run = commit_run(repo, "u1", [(0, os.urandom(8192))])
    assert verify_repository(repo.root) == []
    data = run.path / "disk-2000.data"
    blob = bytearray(data.read_bytes())
    blob[100] ^= 1
    data.write_bytes(bytes(blob))
    assert any("disk-2000.data" in p for p in verify_repository(repo.root))
    data.write_bytes(bytes(blob[:10]))
    assert any("extent map says" in p for p in verify_repository(repo.root))
    data.unlink()
    assert any("disk-2000.data" in p and "missing" in p for p in verify_repository(repo.root))


def test_incremental_without_a_full_is_reported(tmp_path):
    repo = Repository.open(tmp_path / "r", create=True)
    commit_run(repo, "u1", [(0, b"x" * 512)], kind="incremental")
    assert any("no full run" in p for p in verify_repository(repo.root))
    run = json.loads((repo.runs("u1")[0].path / "run.json").read_text())
    assert run["disks"][0]["kind"] == "incremental"


def test_read_areas_splits_across_layers_and_never_reads_holes():
    files = {"top": bytes(range(256)) * 16, "base": b"\x11" * 8192}
    reads = []

    def stream_of(name, offset, length):
        reads.append((name, offset, length))
        yield files[name][offset : offset + length]

    runs = [Run(0, 1024, "base", 0), Run(1024, 1024, None, 0), Run(2048, 2048, "top", 100)]
    got = list(read_areas(runs, stream_of, [(512, 1024), (3000, 100)]))
    assert got == [(512, b"\x11" * 512), (1024, 512), (3000, files["top"][1052:1152])]
    assert ("top", 1052, 100) in reads and all(r[0] != "hole" for r in reads)
    with pytest.raises(ValueError, match="does not cover"):
        list(read_areas(runs, stream_of, [(4000, 200)]))


def test_replay_checks_the_data_against_the_runs_hash(tmp_path):
    # A flipped byte, a truncated or a longer data file fails the rebuild (issue 14, item 8).
    repo = Repository.open(tmp_path / "r", create=True)
    info = commit_run(repo, "u1", [(0, os.urandom(8192))])
    entry = info.load()["disks"][0]
    data = info.path / "disk-2000.data"
    good = data.read_bytes()
    fd = os.open(tmp_path / "img", os.O_RDWR | os.O_CREAT)
    try:
        os.ftruncate(fd, 1 << 20)
        for damaged, says in [
            (good[:100] + bytes([good[100] ^ 1]) + good[101:], "is not the"),
            (good[:10], "shorter than its extent map"),
            (good + b"x", "longer than its extent map"),
        ]:
            data.write_bytes(damaged)
            with pytest.raises(errors.VerifyError, match=says) as caught:
                apply_extents(info.path, entry, fd)
            assert caught.value.exit_code == errors.VERIFY
        data.write_bytes(good)
        apply_extents(info.path, entry, fd)
    finally:
        os.close(fd)
