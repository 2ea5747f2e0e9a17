"""What a fault test checks after the fault, through the lab's own state (never through
vcbproxy): no ``_VCB-BACKUP_`` snapshot on the VM once every task the lab runs on it has ended,
and no export directory a backup product could take for a finished one."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.e2e.oracle import vcb_snapshots

INCOMPLETE_MARKER = ".vcbproxy-incomplete"
FINISHED_LOOKING = ("vcbproxy.json", "MANIFEST.sha256", "catalog")


def wait_for(predicate, *, timeout: float = 60.0, what: str = "condition"):
    """``predicate()``'s first true value, polled every 50 ms; a test failure after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def copying(target: Path) -> list[Path]:
    """The VM's files being written into ``target`` (the copy has started: the snapshot
    exists). Not the marker's own ``.vcbproxy-incomplete.partial``, written before it."""
    return [p for p in target.glob("*.partial") if not p.name.startswith(".")]


def running_tasks(lab_client, vm: str) -> list[dict]:
    return lab_client.state(vm)["tasks"]


def wait_for_task(lab_client, vm: str, name: str, *, timeout: float = 60.0) -> dict:
    """The lab task ``name`` (e.g. ``VirtualMachine.createSnapshot``) once it runs on ``vm``."""
    return wait_for(
        lambda: next(
            (
                t
                for t in running_tasks(lab_client, vm)
                if t["name"] == name and t["state"] == "running"
            ),
            None,
        ),
        timeout=timeout,
        what=f"{name} running on {vm}",
    )


def assert_no_snapshot_left(lab_client, vm: str, *, settle: float = 60.0) -> None:
    """Once no task runs on ``vm`` any more (a task a client gave up on still makes its
    snapshot), the VM carries no ``_VCB-BACKUP_`` snapshot."""
    wait_for(
        lambda: not running_tasks(lab_client, vm), timeout=settle, what=f"tasks on {vm} to end"
    )
    assert not vcb_snapshots(lab_client, vm), lab_client.state(vm)["snapshots"]


def assert_no_finished_export(target: Path) -> None:
    """``target`` (and any ``<vm>-fullVM`` in it) is gone, or visibly unfinished."""
    if not target.exists():
        return
    for directory in [target, *(p for p in target.iterdir() if p.is_dir())]:
        if (directory / INCOMPLETE_MARKER).exists():
            continue
        found = [n for n in FINISHED_LOOKING if (directory / n).exists()]
        assert not found, f"{directory} looks finished: {found}"


def error_line(err: str) -> str:
    """The one ``vcbproxy: error:`` line of a run's stderr (a test failure if there are
    several, or a traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("vcbproxy: error:")]
    assert len(lines) == 1, err
    return lines[0]


def finish(proc: subprocess.Popen, *, timeout: float = 120.0) -> tuple[int, str]:
    """Wait for a started CLI process; its exit code and stderr."""
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def killed_mid_copy(env: dict, lab_client, vm: str, target: Path, *, throttle: int) -> dict:
    """What ``kill -9`` leaves: an export of ``vm`` into ``target`` killed while it copies
    (``throttle`` bytes/s keeps it copying). Its ``_VCB-BACKUP_`` snapshot (the lab's view),
    which stays on the VM: nothing ran to remove it."""
    from tests.e2e.cli import start

    lab_client.set_faults(throttle_bps=throttle)
    proc = start(env, "mount", "-a", f"name:{vm}", "-r", str(target), "-q")

    def started() -> list:
        if proc.poll() is not None:  # it must still be copying when it is killed
            raise AssertionError(f"the export ended first: {proc.communicate()[1]}")
        return bool(copying(target)) and vcb_snapshots(lab_client, vm)

    try:
        (snapshot,) = wait_for(started, what="the copy to start")
    finally:
        proc.kill()
        proc.communicate(timeout=60)
        lab_client.set_faults(throttle_bps=None)
    assert proc.returncode == -9, proc.returncode
    return snapshot
