"""A snapshot belongs to the job that took it (issue 14, item 3): while a job runs, no other
command removes its snapshot - not ``unmount`` of an older export of the same VM, not a sweep,
not the post-command or ``vcbCleanup``, not a second job however it spells the server - and
once its owner is provably gone, the cleanup commands do remove it. Real processes against
the lab; what stays on the VM is read from the lab's own state."""

from __future__ import annotations

import signal

from tests.e2e.cli import run, start
from tests.e2e.faults import (
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

SLOW = 128 << 10  # bytes/s: web01's first 8 MiB disk streams for a minute, time for every check


def snapshot_ids(lab_client, vm: str) -> list[str]:
    return [s["moref"] for s in vcb_snapshots(lab_client, vm)]


def test_no_command_takes_a_running_jobs_snapshot(env, lab, lab_client, tmp_path, stopped_after):
    stage = tmp_path / "stage"
    stage.mkdir()
    cenv = config_env(env, tmp_path, lab, stage)
    older = tmp_path / "older"
    assert run(env, "mount", "-a", "name:web01", "-r", str(older), "-q").code == 0
    assert script(cenv, "pre-command", "web01").code == 0  # BACKUPROOT/web01-fullVM

    lab_client.set_faults(throttle_bps=SLOW)
    running = tmp_path / "running"
    proc = stopped_after(start(env, "mount", "-a", "name:web01", "-r", str(running), "-q"))
    wait_for(lambda: copying(running), what="the copy to start")
    (snapshot,) = vcb_snapshots(lab_client, "web01")
    assert f"pid={proc.pid} " in snapshot["description"], snapshot  # the owner is recorded
    ours = [snapshot["moref"]]

    res = run(env, "unmount", "-r", str(older))
    assert res.code == 0, res
    assert not older.exists()
    assert snapshot_ids(lab_client, "web01") == ours, res
    assert f"keeping snapshot {ours[0]} of web01" in res.err and "still running" in res.err

    res = run(env, "snapshot", "sweep", "--older-than", "0")
    assert res.code == 0, res
    assert f"SsId:{ours[0]}" in res.out and "kept" in res.out, res
    assert snapshot_ids(lab_client, "web01") == ours

    res = script(cenv, "post-command", "web01")
    assert res.code == 0, res
    assert not (stage / "web01-fullVM").exists()
    assert snapshot_ids(lab_client, "web01") == ours

    res = script(cenv, "vcbCleanup", "-y")
    assert res.code == 0, res
    assert snapshot_ids(lab_client, "web01") == ours

    # The same server spelled another way is still the same VM: the lock holds (15), and
    # --preexisting-snapshot delete never gets to look at the running job's snapshot.
    other = {**env, "VCBPROXY_SERVER": f"localhost:{lab.info['https_port']}"}
    second = tmp_path / "second"
    res = run(
        other, "mount", "-a", "name:web01", "-r", str(second), "--preexisting-snapshot", "delete"
    )
    assert res.code == 15, res
    line = error_line(res.err)
    assert "web01" in line and f"pid {proc.pid}" in line, line
    assert not second.exists()
    assert snapshot_ids(lab_client, "web01") == ours

    proc.send_signal(signal.SIGTERM)  # the job itself removes its snapshot
    returncode, err = finish(proc)
    assert returncode == 143, err
    assert_no_snapshot_left(lab_client, "web01")
    assert_no_finished_export(running)


def test_a_dead_jobs_snapshot_is_removed_and_an_unowned_young_one_is_not(env, lab_client, tmp_path):
    dead = killed_mid_copy(env, lab_client, "web01", tmp_path / "killed", throttle=SLOW)
    assert snapshot_ids(lab_client, "web01") == [dead["moref"]]
    res = run(env, "mount", "-a", "name:web01", "-r", str(tmp_path / "o"), "-q")
    assert res.code == 12, res  # the default policy is "fail"
    assert dead["moref"] in error_line(res.err)
    res = run(
        env,
        "mount",
        "-a",
        "name:web01",
        "-r",
        str(tmp_path / "o"),
        "-q",
        "--preexisting-snapshot",
        "delete",
    )
    assert res.code == 0, res
    assert_no_snapshot_left(lab_client, "web01")

    # No owner record (made by hand, by VCB, by an older vcbproxy): only once it is older than
    # the documented age, 24 hours.
    made = run(env, "snapshot", "create", "-a", "name:web01")
    ssid = made.out.strip().removeprefix("SsId:")
    try:
        res = run(
            env,
            "mount",
            "-a",
            "name:web01",
            "-r",
            str(tmp_path / "p"),
            "-q",
            "--preexisting-snapshot",
            "delete",
        )
        assert res.code == 12, res
        line = error_line(res.err)
        assert ssid in line and "names no owner" in line and "less than 24h" in line, line
        assert not (tmp_path / "p").exists()
        res = run(env, "snapshot", "sweep")
        assert res.code == 0, res
        assert snapshot_ids(lab_client, "web01") == [ssid]
    finally:
        run(env, "snapshot", "delete", "-a", "name:web01", ssid)
    assert_no_snapshot_left(lab_client, "web01")
