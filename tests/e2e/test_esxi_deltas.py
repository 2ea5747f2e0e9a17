"""VMs whose disks carry ESXi's own snapshot deltas, end to end: export in every mode and
format, CBT backup and restore.

``chain01`` sits on a VMFS6 datastore (SEsparse deltas), ``chain02`` on a VMFS5 one
(vmfsSparse); both come with two user snapshots and guest writes in every layer, and export
adds a third delta. The lab's oracle and qemu-img judge every exported byte.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.cli import run
from tests.e2e.oracle import assert_export_matches_lab, metadata, qemu_compare, vcb_snapshots
from tests.e2e.test_transports import mode_args

DELTA_EXTENT = {"chain01": "-sesparse.vmdk", "chain02": "-delta.vmdk"}

# every mode and every output format, each VM (so each delta format) in every mode
CASES = [
    ("chain01", "nbdssl", "2gbsparse"),
    ("chain02", "nbdssl", "stream"),
    ("chain01", "nbd", "monolithic"),
    ("chain02", "nbd", "flat"),
    ("chain01", "san", "flat"),
    ("chain02", "san", "2gbsparse"),
    ("chain01", "ssh", "stream"),
    ("chain02", "ssh", "monolithic"),
]


@pytest.mark.parametrize("vm, mode, fmt", CASES)
def test_a_vm_with_esxi_snapshot_deltas_exports_one_consolidated_image(
    env, lab, lab_client, request, tmp_path, vm, mode, fmt
):
    before = [s["name"] for s in lab_client.state(vm)["snapshots"]]
    assert before == ["before-upgrade", "after-upgrade"]
    lab_client.churn(vm, 2, seed=hash((vm, mode)) & 0xFFFF)  # into the running delta
    target = tmp_path / f"{vm}-fullVM"
    args = mode_args(mode, lab, request)
    res = run(env, "mount", "-a", f"name:{vm}", "-r", str(target), "--format", fmt, *args, "-q")
    assert res.code == 0, res
    meta = assert_export_matches_lab(target, lab_client, tmp_path)
    (disk,) = meta["disks"]
    # the base, the delta of the first user snapshot and the running delta the export's
    # snapshot froze (with the writes made after the second user snapshot)
    assert [s.rsplit("/", 1)[1] for s in disk["source"]] == [
        f"{vm}.vmdk",
        f"{vm}-000001.vmdk",
        f"{vm}-000002.vmdk",
    ]
    assert [s["name"] for s in lab_client.state(vm)["snapshots"]] == before
    assert not vcb_snapshots(lab_client, vm)
    files = lab_client.state(vm)["disks"]["2000"]["files"]
    assert any(f.endswith(DELTA_EXTENT[vm]) for f in files), files


def test_a_vm_with_disks_on_vmfs5_and_vmfs6_exports_both_delta_formats(
    env, lab, lab_client, tmp_path, fresh_lab
):
    """web01 has a disk on each VMFS version: a user snapshot gives one an SEsparse delta and
    the other a vmfsSparse one; the export reads both (over nbdssl, the default)."""
    from tests.e2e.cli import cli_env
    from tests.fixtures.lab import connect, find_vm, run_task
    from vcblab.client import LabClient

    fresh = LabClient(fresh_lab.info)
    si = connect(fresh_lab)
    vm = find_vm(si, "web01")
    run_task(vm.CreateSnapshot_Task("user", "", False, False))
    fresh.churn("web01", 5, seed=3)
    files = [f for d in fresh.state("web01")["disks"].values() for f in d["files"]]
    assert any(f.endswith("-sesparse.vmdk") for f in files), files
    assert any(f.endswith("-delta.vmdk") for f in files), files
    target = tmp_path / "web01-fullVM"
    res = run(cli_env(fresh_lab.info), "mount", "-a", "name:web01", "-r", str(target), "-q")
    assert res.code == 0, res
    meta = assert_export_matches_lab(target, fresh, tmp_path)
    assert [len(d["source"]) for d in meta["disks"]] == [2, 2]  # the base and the user delta


def test_cbt_backup_reads_the_deltas_and_restores_exactly(fresh_lab, tmp_path):
    """Tracking on first, user snapshots after (so "*" is allowed): a full run, then an
    incremental one, each read through a vmfsSparse (datastore2) and an SEsparse
    (datastore1) chain; every restore point equals the disk at its snapshot."""
    from tests.e2e.cli import cli_env
    from tests.fixtures.lab import connect, find_vm, run_task
    from vcblab.client import LabClient

    env = cli_env(fresh_lab.info)
    lab = LabClient(fresh_lab.info)
    si = connect(fresh_lab)
    repo = tmp_path / "repo"
    assert run(env, "cbt", "enable", "-a", "name:web01").code == 0
    vm = find_vm(si, "web01")
    for number in (1, 2):
        lab.churn("web01", 4, seed=number)
        run_task(vm.CreateSnapshot_Task(f"user {number}", "", False, False))
    for number, kind in ((1, "full"), (2, "incremental")):
        lab.churn("web01", 4, seed=10 + number)
        res = run(env, "backup", "-a", "name:web01", "--repo", str(repo), "--json")
        assert res.code == 0, res
        summary = json.loads(res.out.strip().splitlines()[-1])
        assert set(summary["kinds"].values()) == {kind}, summary
        out = tmp_path / f"rp{number}"
        res = run(
            env, "restore-point", "--repo", str(repo), "--run", str(number), "--out", str(out)
        )
        assert res.code == 0, res
        info = json.loads((out / "restore-point.json").read_text())
        snapshot = json.loads(next(repo.glob(f"*/runs/{number:06d}/run.json")).read_text())
        for disk in info["disks"].values():
            truth = lab.oracle(snapshot=snapshot["snapshot"]["moref"], key=disk["key"], raw=True)
            assert disk["sha256"] == truth["sha256"], (number, disk)
            qemu_compare(out / disk["files"][0], truth["path"])


def test_an_export_of_a_chain_restores_as_a_vm_whose_disk_is_the_same(
    env, lab, lab_client, si, tmp_path
):
    """chain02 (vmfsSparse) exported, restored as a new VM onto VMFS6, exported again: the
    same content; the restored VM's own snapshots then write SEsparse deltas."""
    from tests.e2e.test_restore import _hashes

    name = "chain02-restored"
    source = tmp_path / "src"
    assert run(env, "mount", "-a", "name:chain02", "-r", str(source), "-q").code == 0
    res = run(env, "restore", "-s", str(source), "--name", name, "--datastore", "datastore1", "-q")
    assert res.code == 0, res
    try:
        again = tmp_path / "again"
        res = run(env, "mount", "-a", f"name:{name}", "-r", str(again), "-q")
        assert res.code == 0, res
        assert _hashes(again) == _hashes(source)
        assert_export_matches_lab(again, lab_client, tmp_path)
        # the restored VM lives on VMFS6 now: its own snapshots write SEsparse deltas
        from tests.fixtures.lab import find_vm, run_task

        # its own session: the shared one (lab_si) would sit idle until the lab drops it
        run_task(find_vm(si, name).CreateSnapshot_Task("after restore", "", False, False))
        lab_client.churn(name, 5, seed=1)
        third = tmp_path / "third"
        assert run(env, "mount", "-a", f"name:{name}", "-r", str(third), "-q").code == 0
        assert_export_matches_lab(third, lab_client, tmp_path)
        layers = [s.rsplit("/", 1)[1] for s in metadata(third)["disks"][0]["source"]]
        assert len(layers) == 2 and layers[0] == f"{name}.vmdk", layers
        files = lab_client.state(name)["disks"]["2000"]["files"]
        assert layers[1].replace(".vmdk", "-sesparse.vmdk") in files, files
    finally:
        from tests.e2e.test_restore import _session
        from vcbproxy.selectors import Selector
        from vcbproxy.vsphere.inventory import find_vms
        from vcbproxy.vsphere.register import destroy_vm

        with _session(lab) as session:
            for vm in find_vms(session, Selector("name", name)):
                destroy_vm(session, vm.moref)
