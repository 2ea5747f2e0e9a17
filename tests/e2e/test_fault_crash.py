"""After ``kill -9`` everything can be cleaned up (issue 14, item 4): the export directory is
recognisable as ours from its first moment (its identity - VM, server, owner, then the
snapshot - is written before any data), so ``unmount`` and the post-command remove an
unfinished export and the dead job's snapshot, the post-command removes the VM's stale
snapshot even with no directory, and the next pre-command succeeds. A job that still runs
keeps both its directory and its snapshot. Real processes, real signals; what stays on the
VM is read from the lab's own state."""

from __future__ import annotations

import json
import signal
import subprocess

from tests.e2e.cli import ROOT, run, start
from tests.e2e.faults import (
    INCOMPLETE_MARKER,
    assert_no_finished_export,
    assert_no_snapshot_left,
    copying,
    error_line,
    finish,
    killed_mid_copy,
    wait_for,
)
from tests.e2e.oracle import vcb_snapshots
from tests.e2e.test_compat_scripts import config_env, script

SLOW = 256 << 10  # bytes/s: still copying when it is killed


def test_post_command_cleans_up_after_a_killed_pre_command(env, lab, lab_client, tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    cenv = config_env(env, tmp_path, lab, stage)
    target = stage / "web01-fullVM"
    lab_client.set_faults(throttle_bps=SLOW)
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "pre-command"), "web01"],
        env=cenv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: copying(target), what="the copy to start")
        (snapshot,) = vcb_snapshots(lab_client, "web01")
    finally:
        proc.kill()  # the wrapper execs Python: this is the job itself
        proc.communicate(timeout=60)
        lab_client.set_faults(throttle_bps=None)
    # The identity was there before the data: the VM, the owner, the snapshot.
    identity = json.loads((target / INCOMPLETE_MARKER).read_text())
    assert identity["vm"]["name"] == "web01" and identity["owner"]["pid"] == proc.pid
    assert identity["snapshot"] == snapshot["moref"]

    res = script(cenv, "pre-command", "web01")
    assert res.code == 14, res  # the mount point is in the way until the post-command ran
    res = script(cenv, "post-command", "web01")
    assert res.code == 0, res
    assert not target.exists()
    assert_no_snapshot_left(lab_client, "web01")

    res = script(cenv, "pre-command", "web01")
    assert res.code == 0, res
    assert script(cenv, "post-command", "web01").code == 0
    assert not target.exists()
    assert_no_snapshot_left(lab_client, "web01")


def test_unmount_removes_a_killed_export_and_its_snapshot(env, lab_client, tmp_path):
    target = tmp_path / "web01"
    killed_mid_copy(env, lab_client, "web01", target, throttle=SLOW)
    assert (target / INCOMPLETE_MARKER).exists()
    res = run(env, "mount", "-a", "name:web01", "-r", str(target), "-q")
    assert res.code == 14, res
    assert f"vcbproxy unmount -r {target}" in error_line(res.err)  # the advice it gives ...
    res = run(env, "unmount", "-r", str(target))  # ... works
    assert res.code == 0, res
    assert not target.exists()
    assert_no_snapshot_left(lab_client, "web01")


def test_post_command_with_no_directory_removes_a_dead_jobs_snapshot(
    env, lab, lab_client, tmp_path
):
    stage = tmp_path / "stage"
    stage.mkdir()
    cenv = config_env(env, tmp_path, lab, stage)
    # Killed while exporting somewhere the post-command does not look: only the snapshot.
    dead = killed_mid_copy(env, lab_client, "web01", tmp_path / "elsewhere", throttle=SLOW)
    assert [s["moref"] for s in vcb_snapshots(lab_client, "web01")] == [dead["moref"]]
    res = script(cenv, "post-command", "web01")
    assert res.code == 0, res
    assert_no_snapshot_left(lab_client, "web01")
    assert script(cenv, "pre-command", "web01").code == 0
    assert script(cenv, "post-command", "web01").code == 0
    assert_no_snapshot_left(lab_client, "web01")


def test_unmount_refuses_a_running_jobs_unfinished_export(env, lab_client, tmp_path, stopped_after):
    target = tmp_path / "web01"
    lab_client.set_faults(throttle_bps=SLOW)
    proc = stopped_after(start(env, "mount", "-a", "name:web01", "-r", str(target), "-q"))
    wait_for(lambda: copying(target), what="the copy to start")
    (snapshot,) = vcb_snapshots(lab_client, "web01")
    res = run(env, "unmount", "-r", str(target))
    assert res.code == 15, res
    line = error_line(res.err)
    assert str(target) in line and f"pid {proc.pid}" in line and "still running" in line, line
    assert target.exists()
    assert [s["moref"] for s in vcb_snapshots(lab_client, "web01")] == [snapshot["moref"]]
    proc.send_signal(signal.SIGTERM)
    returncode, err = finish(proc)
    assert returncode == 143, err
    assert_no_snapshot_left(lab_client, "web01")
    assert_no_finished_export(target)
