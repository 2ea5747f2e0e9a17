"""Export, CBT backup and restore of web02, a VM of the lab's second datacenter
(``emea/lab-dc2``, inside a datacenter folder) whose datastore is called ``datastore1`` like
one of the first datacenter's: every file URL, FileManager call and registration must name
the right datacenter, or the bytes come from (or go to) the other datastore1.

Each disk is judged against the lab's oracle at the snapshot (hash and qemu-img compare).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.cli import run
from tests.e2e.oracle import assert_export_matches_lab, metadata, qemu_compare, vcb_snapshots

VM = "web02"
DC2 = "emea/lab-dc2"
MODES = ["nbdssl", "nfc"]


def _dc2_datastore1(lab) -> Path:
    return Path(lab.info["datacenters"][DC2]["datastores"]["datastore1"])


@pytest.mark.parametrize("mode", MODES)
def test_export_of_a_vm_in_the_second_datacenter(env, lab_client, tmp_path, mode):
    target = tmp_path / "web02-fullVM"
    res = run(env, "mount", "-a", f"name:{VM}", "-r", str(target), "-m", mode, "-q")
    assert res.code == 0, res
    meta = assert_export_matches_lab(target, lab_client, tmp_path)
    assert meta["vm"]["datacenter"] == DC2
    assert len([d for d in meta["disks"] if not d.get("skipped")]) == 2
    assert (target / "web02.vmx").read_text().count("displayName") == 1
    assert not vcb_snapshots(lab_client, VM)


@pytest.fixture(scope="module")
def cbt_on_web02(lab):
    from tests.e2e.cli import cli_env

    res = run(cli_env(lab.info), "cbt", "enable", "-a", f"name:{VM}")
    assert res.code == 0, res


@pytest.mark.parametrize("mode", MODES)
def test_cbt_backup_of_a_vm_in_the_second_datacenter(cbt_on_web02, env, lab_client, tmp_path, mode):
    repo = tmp_path / "repo"
    for number in (1, 2):
        res = run(env, "backup", "-a", f"name:{VM}", "--repo", str(repo), "-m", mode, "-q")
        assert res.code == 0, res
        out = tmp_path / f"rp{number}"
        res = run(
            env, "restore-point", "--repo", str(repo), "--run", str(number), "--out", str(out)
        )
        assert res.code == 0, res
        info = json.loads((out / "restore-point.json").read_text())
        run_json = json.loads(next(repo.glob(f"*/runs/{number:06d}/run.json")).read_text())
        snapshot = run_json["snapshot"]["moref"]
        assert len(info["disks"]) == 2
        for disk in info["disks"].values():
            truth = lab_client.oracle(snapshot=snapshot, key=disk["key"], raw=True)
            assert disk["sha256"] == truth["sha256"], (number, disk)
            qemu_compare(out / disk["files"][0], truth["path"])
        lab_client.churn(VM, 2, seed=number)
    assert not vcb_snapshots(lab_client, VM)


@pytest.fixture
def restored(lab):
    """Names restored by a test, destroyed afterwards (the shared lab stays as it was)."""
    names: list[str] = []
    yield names
    from tests.e2e.test_restore import _session
    from vcbproxy.selectors import Selector
    from vcbproxy.vsphere.inventory import find_vms
    from vcbproxy.vsphere.register import destroy_vm

    with _session(lab) as session:
        for name in names:
            for vm in find_vms(session, Selector("name", name)):
                destroy_vm(session, vm.moref)


@pytest.mark.parametrize("mode", MODES)
def test_restore_into_the_second_datacenter(env, lab, lab_client, restored, tmp_path, mode):
    export = tmp_path / "web02-fullVM"
    res = run(env, "mount", "-a", f"name:{VM}", "-r", str(export), "-m", mode, "-q")
    assert res.code == 0, res
    name = f"web02-restored-{mode}"
    restored.append(name)
    # No --datastore: the .vmx's own "datastore1", which both datacenters have; the export's
    # datacenter decides.
    res = run(env, "restore", "-s", str(export), "--name", name, "-q")
    assert res.code == 0, res
    (found,) = json.loads(run(env, "vms", "-s", f"name:{name}", "--json").out)
    assert found["datacenter"] == DC2, found
    assert found["folder"] == f"/{DC2}/vm"
    on_disk = _dc2_datastore1(lab) / name
    assert (on_disk / f"{name}.vmx").is_file()
    first_dc = Path(lab.info["datastores"]["datastore1"]) / name
    assert not first_dc.exists()
    flats = sorted(on_disk.glob("*-flat.vmdk"))
    descriptors = [export / d["files"][0] for d in metadata(export)["disks"]]
    assert len(flats) == len(descriptors) == 2
    for flat, descriptor in zip(flats, descriptors, strict=True):
        qemu_compare(descriptor, str(flat))  # a flat extent is the raw disk
    # Asked for explicitly, the first datacenter's datastore1 is another place.
    res = run(
        env,
        "restore",
        "-s",
        str(export),
        "--name",
        name + "-dc1",
        "--datacenter",
        "lab-dc",
        "-q",
    )
    restored.append(name + "-dc1")
    assert res.code == 0, res
    assert (first_dc.with_name(name + "-dc1") / f"{name}-dc1.vmx").is_file()
