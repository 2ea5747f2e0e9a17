"""A job stopped by a signal at any point leaves no snapshot: not even while the snapshot is
being created or removed, when the task runs on the server and the job has no snapshot
reference yet (or no longer one). Real ``vcbproxy`` processes, real signals; the lab's own
state says what is left on the VM once its tasks have ended."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.cli import run, start
from tests.e2e.faults import (
    assert_no_finished_export,
    assert_no_snapshot_left,
    error_line,
    finish,
    wait_for_task,
)

CREATE = "VirtualMachine.createSnapshot"
REMOVE = "VirtualMachine.removeSnapshot"


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"]
)
def test_signal_while_the_snapshot_is_created_leaves_no_snapshot(
    env, lab_client, tmp_path, signum, code
):
    lab_client.set_faults(task_delay=3)
    target = tmp_path / "web01"
    proc = start(env, "mount", "-a", "name:web01", "-r", str(target), "-q")
    wait_for_task(lab_client, "web01", CREATE)
    proc.send_signal(signum)
    returncode, err = finish(proc)
    assert returncode == code, err
    name = signal.Signals(signum).name
    assert error_line(err) == f"vcbproxy: error: interrupted by {name}; cleanup done"
    assert_no_snapshot_left(lab_client, "web01")
    assert_no_finished_export(target)


def test_signal_while_the_snapshot_is_removed_leaves_no_snapshot(env, lab_client, tmp_path):
    lab_client.set_faults(snapshot_remove_delay=3)
    target = tmp_path / "web01"
    proc = start(env, "mount", "-a", "name:web01", "-r", str(target), "-q")
    wait_for_task(lab_client, "web01", REMOVE)
    proc.send_signal(signal.SIGTERM)
    returncode, err = finish(proc)
    assert returncode == 143, err
    assert error_line(err) == "vcbproxy: error: interrupted by SIGTERM; cleanup done"
    assert_no_snapshot_left(lab_client, "web01")
    # Stopped before it said "done": not an export to back up, although every byte was copied.
    assert_no_finished_export(target)


def test_signal_while_a_cbt_backup_creates_its_snapshot_leaves_no_snapshot(
    env, lab_client, tmp_path
):
    assert run(env, "cbt", "enable", "-a", "name:web01").code == 0
    lab_client.set_faults(task_delay=3)
    proc = start(env, "backup", "-a", "name:web01", "--repo", str(tmp_path / "repo"), "-q")
    wait_for_task(lab_client, "web01", CREATE)
    proc.send_signal(signal.SIGTERM)
    returncode, err = finish(proc)
    assert returncode == 143, err
    assert error_line(err) == "vcbproxy: error: interrupted by SIGTERM; cleanup done"
    assert_no_snapshot_left(lab_client, "web01")
    assert not list((tmp_path / "repo").rglob("run.json")), "a run was committed"
