"""Per-VM lock across real processes: contention names the holder, a dead holder's lock is taken over."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vcbproxy import errors
from vcbproxy.staging.lock import VmLock

HOLDER = textwrap.dedent("""
    import sys, time
    from vcbproxy.staging.lock import VmLock
    with VmLock(sys.argv[1], sys.argv[2], description=sys.argv[3]):
        print("locked", flush=True)
        time.sleep(120)
""")

REPO = Path(__file__).resolve().parents[2]  # so the child imports this checkout's vcbproxy


@pytest.fixture
def holder(tmp_path):
    """A real second process holding the lock of vm-42; yields its Popen."""
    procs = []

    def start(key="lab_443-vm-42", description="vm-42 (web01)"):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(tmp_path / "locks"), key, description],
            stdout=subprocess.PIPE,
            cwd=REPO,
        )
        procs.append(proc)
        assert proc.stdout.readline() == b"locked\n"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_second_process_is_refused_with_the_holder_named(tmp_path, holder):
    proc = holder()
    lock = VmLock(tmp_path / "locks", "lab_443-vm-42", description="vm-42 (web01)")
    with pytest.raises(errors.LockError) as info:
        lock.acquire()
    message = str(info.value)
    assert message.startswith(f"VM vm-42 (web01) is being exported by pid {proc.pid} since ")
    assert info.value.exit_code == errors.LOCK
    assert not lock.held
    # Another VM is not affected.
    with VmLock(tmp_path / "locks", "lab_443-vm-43"):
        pass


def test_lock_of_a_killed_holder_is_taken_over_with_a_warning(tmp_path, holder, caplog):
    proc = holder()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lock_file = tmp_path / "locks" / "lab_443-vm-42.lock"
    assert (
        json.loads(lock_file.read_text())["pid"] == proc.pid
    )  # the dead holder's record is still there
    with (
        caplog.at_level(logging.WARNING, logger="vcbproxy.staging.lock"),
        VmLock(tmp_path / "locks", "lab_443-vm-42", description="vm-42 (web01)") as lock,
    ):
        info = json.loads(lock_file.read_text())
        assert info["pid"] == os.getpid()
        assert info["host"] == socket.gethostname()
        assert info["vm"] == "vm-42 (web01)"
        assert lock.held
    assert f"stale lock of vm-42 (web01) from pid {proc.pid}" in caplog.text
    assert "the process is gone" in caplog.text
    assert not lock_file.exists()


def test_released_lock_can_be_taken_by_another_process(tmp_path, holder):
    with VmLock(tmp_path / "locks", "k"):
        pass
    holder(key="k")  # would fail the readline assertion if the lock were still held


def test_same_process_second_lock_is_refused(tmp_path):
    with (
        VmLock(tmp_path / "locks", "k", description="vm-1 (a)"),
        pytest.raises(errors.LockError, match=f"pid {os.getpid()}"),
    ):
        VmLock(tmp_path / "locks", "k").acquire()


def test_keys_are_sanitised_into_the_lock_dir(tmp_path):
    with VmLock(tmp_path / "locks", "../../evil/vm-1") as lock:
        assert lock.path.parent == tmp_path / "locks"
    assert os.listdir(tmp_path) == ["locks"]
