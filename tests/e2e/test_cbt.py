"""CBT backup against the lab: full then incrementals with churn between runs; every run's
restore point equals the lab's disk at that run's snapshot and the VCB-style export of the
same state, byte for byte."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.cli import run, start
from tests.e2e.oracle import metadata, qemu_compare, vcb_snapshots

VM = "web01"


def backup(env, repo, *extra):
    res = run(env, "backup", "-a", f"name:{VM}", "--repo", str(repo), "--json", *extra)
    summary = json.loads(res.out.strip().splitlines()[-1]) if res.out.strip() else None
    return res, summary


def run_json(repo: Path, number: int) -> dict:
    return json.loads(next(repo.glob(f"*/runs/{number:06d}/run.json")).read_text())


def assert_restore_point_matches(env, lab_client, repo, number, tmp_path) -> dict:
    out = tmp_path / f"rp{number}"
    res = run(env, "restore-point", "--repo", str(repo), "--run", str(number), "--out", str(out))
    assert res.code == 0, res
    info = json.loads((out / "restore-point.json").read_text())
    snapshot = run_json(repo, number)["snapshot"]["moref"]
    for device, disk in info["disks"].items():
        truth = lab_client.oracle(snapshot=snapshot, key=disk["key"], raw=True)
        assert disk["sha256"] == truth["sha256"], (number, device)
        qemu_compare(out / disk["files"][0], truth["path"])
    return info


@pytest.fixture(scope="module")
def cbt_on(lab):
    from tests.e2e.cli import cli_env

    env = cli_env(lab.info)
    res = run(env, "cbt", "enable", "-a", f"name:{VM}")
    assert res.code == 0, res
    assert "off" not in res.out, res.out
    return env


def test_full_then_incrementals_restore_exactly_and_read_only_what_changed(
    cbt_on, env, lab_client, tmp_path
):
    repo = tmp_path / "repo"
    res, first = backup(env, repo)
    assert res.code == 0, res
    assert set(first["kinds"].values()) == {"full"}
    assert_restore_point_matches(env, lab_client, repo, 1, tmp_path)
    for number in (2, 3):
        churned = lab_client.churn(VM, 3, seed=100 + number)["bytes"]
        res, summary = backup(env, repo)
        assert res.code == 0, res
        assert set(summary["kinds"].values()) == {"incremental"}
        # What CBT reads is what the guest wrote (block-aligned), not the disk.
        assert summary["changed_bytes"] <= 1.05 * churned, (summary, churned)
        assert summary["bytes_read"] <= 1.05 * churned + (1 << 20), (summary, churned)
        info = assert_restore_point_matches(env, lab_client, repo, number, tmp_path)
        # The same state exported VCB-style has the same disk contents.
        export = tmp_path / f"full{number}"
        assert run(env, "mount", "-a", f"name:{VM}", "-r", str(export), "-q").code == 0
        full = {d["device"]: d["content_sha256"] for d in metadata(export)["disks"]}
        assert full == {dev: d["sha256"] for dev, d in info["disks"].items()}
    assert run(env, "verify", "--repo", str(repo)).code == 0
    assert not vcb_snapshots(lab_client, VM)


@pytest.mark.parametrize(
    "paging",
    [{"cbt_page_bytes": 1 << 20}, {"cbt_max_areas": 2}],
    ids=["1MiB-per-call", "2-areas-per-call"],
)
def test_paged_changed_areas_are_followed_to_the_end_of_the_disk(
    cbt_on, env, lab_client, tmp_path, paging
):
    repo = tmp_path / "repo"
    lab_client.set_faults(**paging)  # the full read pages too
    assert backup(env, repo)[0].code == 0
    assert_restore_point_matches(env, lab_client, repo, 1, tmp_path)
    lab_client.churn(VM, 5, seed=7)
    res, summary = backup(env, repo)
    assert res.code == 0, res
    assert summary["changed_bytes"] > 0
    assert_restore_point_matches(env, lab_client, repo, 2, tmp_path)


def test_tracking_reset_falls_back_to_a_full_read_or_fails_when_asked(
    cbt_on, env, lab_client, tmp_path
):
    repo = tmp_path / "repo"
    assert backup(env, repo)[0].code == 0
    lab_client.churn(VM, 2, seed=11)
    lab_client.set_faults(reset_cbt=VM)
    res, _ = backup(env, repo, "--no-fallback")
    assert res.code == 12, res
    assert "change ID" in res.err
    assert len(list(repo.glob("*/runs/0*"))) == 1  # nothing half-written
    res, summary = backup(env, repo)
    assert res.code == 3, res
    assert set(summary["kinds"].values()) == {"full"}
    assert_restore_point_matches(env, lab_client, repo, 2, tmp_path)


def test_a_crash_mid_backup_leaves_the_next_run_correct(cbt_on, env, lab_client, tmp_path):
    repo = tmp_path / "repo"
    assert backup(env, repo)[0].code == 0
    lab_client.churn(VM, 20, seed=21)
    lab_client.set_faults(throttle_bps=1 << 20)
    proc = start(env, "backup", "-a", f"name:{VM}", "--repo", str(repo), "-q")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(repo.glob("*/runs/*.partial/*.data.partial")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no cleanup at all: a real crash
    proc.communicate(timeout=60)
    lab_client.set_faults(throttle_bps=None)
    res, summary = backup(env, repo, "--preexisting-snapshot", "delete")
    assert res.code == 0, res
    assert summary["run"] == 2 and set(summary["kinds"].values()) == {"incremental"}
    assert not list(repo.glob("*/runs/*.partial"))
    assert_restore_point_matches(env, lab_client, repo, 2, tmp_path)
    assert not vcb_snapshots(lab_client, VM)


def test_verify_repo_detects_a_flipped_byte(cbt_on, env, tmp_path):
    repo = tmp_path / "repo"
    assert backup(env, repo)[0].code == 0
    data = next(repo.glob("*/runs/000001/disk-*.data"))
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    data.write_bytes(bytes(blob))
    res = run(env, "verify", "--repo", str(repo))
    assert res.code == 16, res
    assert data.name in res.out + res.err


def test_compare_reports_full_against_cbt_per_run(cbt_on, env, lab, lab_client, tmp_path):
    info = tmp_path / "lab.json"
    info.write_text(json.dumps(lab.info))
    work = tmp_path / "cmp"
    res = run(
        env,
        "compare",
        "-a",
        f"name:{VM}",
        "--runs",
        "3",
        "--churn",
        "2",
        "--lab-info",
        str(info),
        "--workdir",
        str(work),
    )
    assert res.code == 0, res
    report = json.loads((work / "compare.json").read_text())
    assert (work / "compare.csv").read_text().count("\n") == 5  # header, 3 runs, total
    assert (work / "compare.png").read_bytes()[:4] == b"\x89PNG"
    # the full side is VCB's copy: every block, not CBT's allocation map (CBT is on here)
    capacity = sum(
        lab_client.oracle(vm=VM, key=int(key))["size"] for key in lab_client.state(VM)["disks"]
    )
    assert all(row["full_read"] >= capacity for row in report["runs"]), (capacity, report["runs"])
    for row in report["runs"][1:]:
        assert row["churn_bytes"] > 0
        assert row["cbt_read"] <= 1.05 * row["churn_bytes"] + (1 << 20), row
        assert row["full_read"] > 3 * row["cbt_read"], row
    assert "total" in res.out
