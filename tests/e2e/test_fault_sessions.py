"""A session that expires during a long copy: kept alive, or logged in again, and the export of
any length completes and removes its snapshot; only credentials that no longer work fail it,
naming the snapshot it could not remove.

A lab of this module's own: short session timeouts would end the shared lab's sessions. The
copy is kept quiet on the SOAP side by a throttled ``/folder`` read (one ranged GET per disk
layer, authenticated only when it starts, as a SAN or SSH copy makes no SOAP call at all);
the lab counts the logins it accepted, which tells a kept-alive session (one login) from a
renewed one (two or more).
"""

from __future__ import annotations

import pytest

from tests.e2e.cli import cli_env, run, start
from tests.e2e.faults import (
    assert_no_finished_export,
    assert_no_snapshot_left,
    copying,
    error_line,
    finish,
    wait_for,
    wait_for_task,
)
from tests.e2e.oracle import assert_export_matches_lab, vcb_snapshots
from vcblab.process import start_lab

SLOW = 2 << 20  # bytes/s: each of web01's 4 MiB disks streams for 2 s, twice the session timeout


@pytest.fixture(scope="module")
def session_lab(tmp_path_factory):
    with start_lab(tmp_path_factory.mktemp("session-lab"), disk_size="4M") as proc:
        yield proc


@pytest.fixture
def client(session_lab):
    from vcblab.client import LabClient

    client = LabClient(session_lab.info)
    yield client
    client.reset_faults()


@pytest.fixture
def env(session_lab):
    return cli_env(session_lab.info)


def export(env, target, *extra: str):
    return run(env, "mount", "-a", "name:web01", "-r", str(target), "-q", *extra)


def test_the_keepalive_holds_the_session_through_a_quiet_copy(env, client, tmp_path):
    client.set_faults(session_timeout=1, throttle_bps=SLOW)
    before = client.logins()
    res = export(env, tmp_path / "o", "--keepalive", "0.3")
    assert res.code == 0, res
    assert client.logins() - before == 1  # never expired: no second login
    assert_export_matches_lab(tmp_path / "o", client, tmp_path)
    assert not vcb_snapshots(client, "web01")


def test_a_session_expired_during_the_copy_is_logged_in_again(env, client, tmp_path):
    # No keep-alive: the session expires while the disks stream; removing the snapshot (and
    # the next /folder request) then meets NotAuthenticated / 401 and logs in again.
    client.set_faults(session_timeout=1, throttle_bps=SLOW)
    before = client.logins()
    res = export(env, tmp_path / "o", "--keepalive", "0")
    assert res.code == 0, res
    assert client.logins() - before >= 2
    assert_export_matches_lab(tmp_path / "o", client, tmp_path)
    assert not vcb_snapshots(client, "web01")


def test_sessions_expired_at_once_mid_copy_are_logged_in_again(env, client, tmp_path):
    client.set_faults(throttle_bps=SLOW)
    target = tmp_path / "o"
    proc = start(env, "mount", "-a", "name:web01", "-r", str(target), "-q")
    wait_for(lambda: copying(target), what="the copy to start")
    client.set_faults(expire_sessions=True)  # what a vCenter restart does to every session
    returncode, err = finish(proc)
    assert returncode == 0, err
    assert_export_matches_lab(target, client, tmp_path)
    assert not vcb_snapshots(client, "web01")


def test_a_401_from_the_file_service_logs_in_again(env, client, tmp_path):
    client.set_faults(folder_unauthorized=1)
    before = client.logins()
    res = export(env, tmp_path / "o")
    assert res.code == 0, res
    assert client.logins() - before == 2
    assert client.faults()["folder_unauthorized"] == 0  # the 401 was really met
    assert_export_matches_lab(tmp_path / "o", client, tmp_path)


def test_san_mode_logs_in_again_after_the_session_expired(env, client, session_lab, tmp_path):
    # SAN reads make no request to the server at all: the session expires while the snapshot
    # task runs (task_delay), and every later call must log in again.
    client.set_faults(task_delay=1)
    target = tmp_path / "o"
    san = [f"--san-map={n}={p}" for n, p in session_lab.info["datastores"].items()]
    proc = start(env, "mount", "-a", "name:web01", "-r", str(target), "-q", "-m", "san", *san)
    wait_for_task(client, "web01", "VirtualMachine.createSnapshot")
    before = client.logins()
    client.set_faults(expire_sessions=True)
    returncode, err = finish(proc)
    assert returncode == 0, err
    assert client.logins() - before == 1
    assert_export_matches_lab(target, client, tmp_path)
    assert not vcb_snapshots(client, "web01")


def test_credentials_that_stop_working_fail_with_10_naming_the_snapshot(env, client, tmp_path):
    client.set_faults(throttle_bps=SLOW)
    target = tmp_path / "o"
    proc = start(env, "mount", "-a", "name:web01", "-r", str(target), "-q")
    wait_for(lambda: copying(target), what="the copy to start")
    (snapshot,) = vcb_snapshots(client, "web01")
    client.set_faults(reject_logins=True, expire_sessions=True)  # the password was changed
    returncode, err = finish(proc)
    assert returncode == 10, err
    line = error_line(err)
    assert f"could not remove snapshot {snapshot['moref']} of web01" in line, line
    assert "login" in line
    assert_no_finished_export(target)
    # The snapshot stays (nothing could remove it); once vcbproxy can log in, it goes.
    assert [s["moref"] for s in vcb_snapshots(client, "web01")] == [snapshot["moref"]]
    client.set_faults(reject_logins=False)
    assert run(env, "snapshot", "sweep", "--older-than", "0").code == 0
    assert_no_snapshot_left(client, "web01")
