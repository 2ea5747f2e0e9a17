"""Atomic files: never visible under the final name unless complete, even when the writer is killed."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vcbproxy import errors
from vcbproxy.staging.atomic import AtomicFile, fsync_dir, write_atomic

REPO = Path(__file__).resolve().parents[2]  # so the child imports this checkout's vcbproxy


def test_commit_renames_and_returns_sha256(tmp_path):
    target = tmp_path / "web01.vmx"
    with AtomicFile(target) as out:
        out.write(b'config.version = "8"\n')
        assert not target.exists()
        assert (tmp_path / "web01.vmx.partial").exists()
        out.write(memoryview(b"x" * 10))
    assert target.read_bytes() == b'config.version = "8"\n' + b"x" * 10
    assert out.sha256 == hashlib.sha256(target.read_bytes()).hexdigest()
    assert out.size == len(target.read_bytes())
    assert os.listdir(tmp_path) == ["web01.vmx"]


def test_write_atomic_replaces_existing(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old")
    digest = write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert digest == hashlib.sha256(b"new").hexdigest()


def test_exception_aborts_and_keeps_old_content(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), AtomicFile(target) as out:
        out.write(b"half")
        raise RuntimeError("transfer dropped")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_abort_is_idempotent_and_blocks_commit(tmp_path):
    out = AtomicFile(tmp_path / "f")
    out.write(b"x")
    out.abort()
    out.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(errors.StagingError, match="after abort"):
        out.commit()
    with pytest.raises(errors.StagingError):
        out.write(b"y")


def test_stale_partial_symlink_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "f.partial").symlink_to(victim)
    write_atomic(tmp_path / "f", b"data")
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "f").read_bytes() == b"data"
    assert not (tmp_path / "f.partial").exists()


def test_final_name_symlink_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "f").symlink_to(victim)
    write_atomic(tmp_path / "f", b"data")
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "f").is_symlink()


def test_unwritable_directory_is_a_staging_error(tmp_path):
    with pytest.raises(errors.StagingError, match="cannot create") as info:
        AtomicFile(tmp_path / "missing-dir" / "f")
    assert info.value.exit_code == errors.STAGING
    assert isinstance(info.value.__cause__, OSError)


def test_full_device_is_a_staging_error(tmp_path):
    # /dev/full fails every write with ENOSPC, like a staging disk that filled up.
    out = AtomicFile(tmp_path / "f")
    out._file.close()
    out._file = open("/dev/full", "wb", buffering=0)  # noqa: SIM115 - handed to AtomicFile
    with pytest.raises(errors.StagingError, match="staging is full"):
        out.write(b"x" * 4096)
    assert not (tmp_path / "f").exists() and not (tmp_path / "f.partial").exists()


def test_killed_writer_never_leaves_the_final_name(tmp_path):
    target = tmp_path / "big.nvram"
    script = textwrap.dedent(f"""
        import sys, time
        from vcbproxy.staging.atomic import AtomicFile
        with AtomicFile({str(target)!r}) as out:
            out.write(b"a" * (3 << 20))
            out._file.flush()
            print("writing", flush=True)
            time.sleep(60)
            out.write(b"b")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert proc.stdout.readline() == b"writing\n"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.stdout.close()
    assert not target.exists()
    assert (tmp_path / "big.nvram.partial").stat().st_size == 3 << 20
    # The next run starts over cleanly.
    write_atomic(target, b"complete")
    assert os.listdir(tmp_path) == ["big.nvram"]


def test_fsync_dir(tmp_path):
    fsync_dir(tmp_path)
    with pytest.raises(errors.StagingError):
        fsync_dir(tmp_path / "nope")
