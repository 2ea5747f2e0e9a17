"""A fleet of three proxies: three `vcbproxy fleet worker` processes with their own staging
directories, a real redis-server on loopback as broker and result store, the lab with 24 VMs
spread over three hosts and four datastores.

What must hold (issue: "Outgrowing one proxy"): every VM exported exactly once, byte for byte
as the lab had it at the snapshot; the per-datastore and per-host limits never exceeded,
according to the lab's own record of concurrent readers; a proxy killed with SIGKILL
mid-export has its VM finished by another, with no snapshot left and no second complete
export; the broker restarted mid-run, and the job still completes.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.fleet import Fleet
from tests.e2e.oracle import assert_export_matches_lab
from vcblab.client import LabClient
from vcblab.process import start_lab

BACKUP_SNAPSHOT = "_VCB-BACKUP_"
EXTRA_VMS = 13  # + the lab's 11 default VMs = 24
# Short leases and redelivery, so a dead proxy's VM moves on within seconds, not hours.
LIMITS = ["--max-per-datastore", "2", "--max-per-host", "1"]
FAST = ["--lease-seconds", "6", "--visibility-timeout", "15", "--restore-interval", "2"]


@pytest.fixture(scope="module")
def fleet_lab(tmp_path_factory):
    with start_lab(tmp_path_factory.mktemp("fleetlab"), disk_size="4M", vms=EXTRA_VMS) as lab:
        yield lab


@pytest.fixture
def lab_client(fleet_lab):
    client = LabClient(fleet_lab.info)
    client.reset_faults()
    client.reset_readers()
    yield client
    client.reset_faults()


@pytest.fixture
def fleet(fleet_lab, redis_server, tmp_path):
    f = Fleet(fleet_lab.info, redis_server.url, tmp_path / "fleet")
    yield f
    f.stop_all()


def all_vms(fleet_lab) -> list[str]:
    from tests.e2e.cli import cli_env, run

    res = run(cli_env(fleet_lab.info), "vms", "-s", "any", "--json")
    assert res.code == 0, res
    return [vm["moref"] for vm in json.loads(res.out)]


def backup_snapshots(lab_client, vms) -> dict[str, list[str]]:
    left = {}
    for vm in vms:
        snaps = [
            s["moref"] for s in lab_client.state(vm)["snapshots"] if s["name"] == BACKUP_SNAPSHOT
        ]
        if snaps:
            left[vm] = snaps
    return left


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_three_proxies_export_every_vm_once_within_the_limits(
    fleet, fleet_lab, lab_client, tmp_path
):
    vms = all_vms(fleet_lab)
    assert len(vms) == 24
    # Each host's link capped, so exports last long enough to overlap.
    lab_client.set_faults(host_throttle_bps=4 << 20)
    for name in ("proxy1", "proxy2", "proxy3"):
        fleet.start(name, "--slots", "2", *FAST)
    job = fleet.submit(
        "any",
        "--mount",
        "{vm}-fullVM",
        "--format",
        "flat",
        *LIMITS,
    )
    res = fleet.cli("wait", job, "--json", "--timeout", "240")
    states = {s["vm"]: s for s in json.loads(res.out or "[]")}
    # db01's independent disk cannot be snapshotted: skipped with a warning, exit 3.
    assert res.code == 3, f"{res}\n{fleet.logs()}"
    assert set(states) == set(vms)
    assert all(s["state"] == "done" for s in states.values()), states
    assert {s["name"] for s in states.values() if s["code"] == 3} == {"db01"}

    exports = fleet.exports()
    assert sorted(exports) == sorted(vms), "every VM exported"
    assert all(len(where) == 1 for where in exports.values()), f"exported twice: {exports}"
    assert not fleet.incomplete()
    # Three proxies shared the work.
    assert {where[0][0] for where in exports.values()} == {"proxy1", "proxy2", "proxy3"}
    for vm, [(proxy, directory)] in exports.items():
        assert states[vm]["proxy"] == proxy and states[vm]["directory"] == str(directory)
        assert_export_matches_lab(directory, lab_client, tmp_path)

    record = lab_client.readers()
    assert record["hosts"] and record["datastores"]
    assert max(v["max"] for v in record["hosts"].values()) <= 1, record
    assert max(v["max"] for v in record["datastores"].values()) <= 2, record
    assert len(record["hosts"]) == 3, "VMs on three hosts were read"
    assert record["lab"]["max"] >= 2, "the proxies read at the same time"
    assert not backup_snapshots(lab_client, vms)


def running_with_snapshot(fleet, job, lab_client):
    """A VM of ``job`` that a proxy is exporting right now (its snapshot exists): (state, proxy)."""
    for s in fleet.status(job):
        if s["state"] == "running" and backup_snapshots(lab_client, [s["vm"]]):
            return s
    return None


def test_a_proxy_killed_mid_export_has_its_vm_finished_by_another(
    fleet, fleet_lab, lab_client, tmp_path
):
    # Slow enough that an export is still copying when its proxy is killed.
    lab_client.set_faults(host_throttle_bps=1 << 20)
    for name in ("proxy1", "proxy2", "proxy3"):
        # A visibility timeout well past the lease, so the lost VM is seen before it moves.
        fleet.start(name, *FAST, "--visibility-timeout", "25")
    job = fleet.submit("powerstate:on", "--mount", "{vm}-fullVM", "--format", "flat", *LIMITS)
    victim = wait_for(
        lambda: running_with_snapshot(fleet, job, lab_client), 120, "a running export"
    )
    fleet.kill(victim["proxy"])
    killed_at = time.monotonic()
    # Until the VM is handed on, its status says that its proxy stopped renewing its lease.
    lost = wait_for(
        lambda: next(
            (s for s in fleet.status(job) if s["vm"] == victim["vm"] and s["message"]), None
        ),
        60,
        "the dead proxy's VM reported",
    )
    assert lost["state"] == "running" and lost["proxy"] == victim["proxy"], lost
    assert "stopped renewing its lease" in lost["message"], lost

    res = fleet.cli("wait", job, "--json", "--timeout", "240")
    states = {s["vm"]: s for s in json.loads(res.out or "[]")}
    assert res.code in (0, 3), f"{res}\n{fleet.logs()}"
    assert all(s["state"] == "done" for s in states.values()), states
    moved = states[victim["vm"]]
    assert moved["proxy"] != victim["proxy"], "another proxy finished the killed proxy's VM"
    assert moved["attempts"] == 2
    assert time.monotonic() - killed_at < 200

    # No snapshot left anywhere, the dead proxy's half export never completed, one export each.
    fleet.drained()
    assert not backup_snapshots(lab_client, list(states))
    exports = fleet.exports()
    assert sorted(exports) == sorted(states)
    assert all(len(where) == 1 for where in exports.values()), f"exported twice: {exports}"
    [(proxy, directory)] = exports[victim["vm"]]
    assert proxy == moved["proxy"]
    assert_export_matches_lab(directory, lab_client, tmp_path)
    # What the dead proxy left in its own staging is unfinished (marked so), never complete.
    assert all(fleet.proxies[victim["proxy"]].staging in d.parents for d in fleet.incomplete())


def test_the_job_completes_across_a_broker_restart(
    fleet, fleet_lab, lab_client, redis_server, tmp_path
):
    lab_client.set_faults(host_throttle_bps=2 << 20)
    for name in ("proxy1", "proxy2", "proxy3"):
        fleet.start(name, *FAST)
    job = fleet.submit("powerstate:on", "--mount", "{vm}-fullVM", "--format", "flat", *LIMITS)
    waiter = fleet.start_wait(job)
    # Restart the broker once some VM is done and others are still queued or running.
    wait_for(
        lambda: (
            lambda st: (
                any(s["state"] == "done" for s in st) and any(s["state"] != "done" for s in st)
            )
        )(fleet.status(job)),
        120,
        "a job halfway",
    )
    redis_server.restart()

    out, err = waiter.communicate(timeout=300)
    states = {s["vm"]: s for s in json.loads(out or "[]")}
    assert waiter.returncode in (0, 3), f"{waiter.returncode} {err}\n{fleet.logs()}"
    assert states and all(s["state"] == "done" for s in states.values()), states
    # The deliveries whose ack the restart lost come back after the visibility timeout: they
    # find their VM done and export nothing.
    fleet.drained()
    assert {s["vm"]: s for s in fleet.status(job)} == states
    assert not backup_snapshots(lab_client, list(states))
    exports = fleet.exports()
    assert sorted(exports) == sorted(states)
    assert all(len(where) == 1 for where in exports.values()), f"exported twice: {exports}"
    assert not fleet.incomplete()
    for [(_, directory)] in exports.values():
        assert_export_matches_lab(directory, lab_client, tmp_path)


def test_broker_problems_are_one_line_errors(fleet_lab, redis_server, tmp_path):
    from tests.e2e.cli import cli_env, run
    from tests.fixtures.sshd import free_port

    env = cli_env(fleet_lab.info)
    down = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there

    def one_line(res, code: int, *words: str) -> None:
        assert res.code == code, res
        lines = res.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in res.err, res
        assert all(w in lines[0] for w in words), res

    submit = ("fleet", "submit", "-a", "any", "--mount", "{vm}-fullVM")
    one_line(run(env, *submit, "--broker", "amqp://127.0.0.1/"), 2, "only Redis")
    one_line(run(env, *submit, "--broker", "redis://127.0.0.1:99999/0"), 2, "bad port")
    one_line(run(env, *submit, "--mount", "{nope}", "--broker", redis_server.url), 2, "{nope}")
    one_line(run(env, *submit, "--broker", down), 18, "cannot reach the broker", "refused")
    one_line(
        run(env, "fleet", "worker", "--staging", str(tmp_path / "s"), "--broker", down),
        18,
        "cannot reach the broker",
    )
    one_line(run(env, "fleet", "status", "no-such-job", "--broker", down), 18, down)
    one_line(
        run(env, "fleet", "wait", "no-such-job", "--broker", down, "--broker-patience", "1"),
        18,
        "cannot reach the broker",
    )
    one_line(
        run(env, "fleet", "status", "no-such-job", "--broker", redis_server.url),
        11,
        "no fleet job 'no-such-job'",
    )


def test_one_proxy_backs_up_and_runs_its_own_hooks(fleet, fleet_lab, lab_client, tmp_path):
    """--backup-repo: a CBT backup per VM into the proxy's repository; the proxy's own
    post-command runs there after each export; status in words."""
    from tests.e2e.cli import run

    hooks = tmp_path / "hooks.log"
    script = tmp_path / "post.sh"
    script.write_text(f'#!/bin/sh\necho "$VCBPROXY_VM_NAME $VCBPROXY_STATUS" >> {hooks}\n')
    script.chmod(0o755)
    proxy = fleet.start("proxy1", "--post-command", str(script), *FAST)
    enabled = run(fleet.env, "cbt", "enable", "-a", "name:vm004")
    assert enabled.code == 0, enabled
    job = fleet.submit("name:vm004", "--backup-repo", "repos/{vm}")
    res = fleet.cli("wait", job, "--timeout", "120")
    assert res.code == 0, f"{res}\n{fleet.logs()}"
    assert res.out.startswith("vm004 (") and "done on proxy1: run 1 in " in res.out, res
    repo = proxy.staging / "repos" / "vm004"
    verified = run(fleet.env, "verify", "--repo", str(repo))
    assert verified.code == 0, verified

    job = fleet.submit("name:files01", "--mount", "{vm}-fullVM", "--format", "flat")
    res = fleet.cli("wait", job, "--timeout", "120")
    assert res.code == 0, f"{res}\n{fleet.logs()}"
    assert f"done on proxy1: {proxy.staging / 'files01-fullVM'}" in res.out, res
    assert hooks.read_text().split() == ["files01", "ok"]
    status = fleet.cli("status", job)
    assert status.code == 0 and status.out == res.out, status
    assert not backup_snapshots(lab_client, ["vm004", "files01"])
