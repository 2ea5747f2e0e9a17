"""vcbproxy restore against the lab, end to end: a real CLI process, real sockets.

Round trip: export web01, restore it as a new VM on datastore2, export the restored VM,
every disk hash equal. Then the refusals and the failure paths: -b keep, -b overwrite
replacing only after the upload, a damaged export refused before any byte moves, and an
upload cut halfway (SIGTERM while throttled) leaving nothing registered and no stray files.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.cli import exported, run, start
from tests.e2e.oracle import metadata
from tests.fixtures.endpoints import lab_endpoint, server_spec

TARGET_DS = "datastore2"


def _hashes(directory: Path) -> dict[str, str]:
    return {
        d["device"]: d["content_sha256"]
        for d in metadata(directory)["disks"]
        if not d.get("skipped")
    }


def _vms_named(env, name: str) -> list[str]:
    res = run(env, "vms", "-s", f"name:{name}")
    if res.code == 11:
        return []
    assert res.code == 0, res
    return [
        line.split(":", 1)[1].strip() for line in res.out.splitlines() if line.startswith("moref:")
    ]


LAB_INTERNAL = (
    ".labbase",
    ".labjournal",
)  # the lab's oracle state beside a disk; no real datastore has them


def _files_under(lab, datastore: str, directory: str) -> list[str]:
    root = lab_endpoint(lab).path(datastore, directory)
    if not root.exists():
        return []
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(LAB_INTERNAL)
    )


@contextlib.contextmanager
def _session(lab):
    from vcbproxy.jobs.connection import connect

    with connect(server_spec(lab_endpoint(lab))) as session:
        yield session


@pytest.fixture
def restored_names(lab):
    """Names of VMs a test restores; each is destroyed afterwards so the shared lab stays as it was."""
    names: list[str] = []
    yield names
    from vcbproxy.selectors import Selector
    from vcbproxy.vsphere.inventory import find_vms
    from vcbproxy.vsphere.register import destroy_vm

    with _session(lab) as session:
        for name in names:
            for vm in find_vms(session, Selector("name", name)):
                destroy_vm(session, vm.moref)


@pytest.fixture(scope="module")
def web01_export(lab, tmp_path_factory):
    return exported(lab.info, "web01", tmp_path_factory.mktemp("restore-src") / "web01-fullVM")


def test_round_trip_restore_as_new_vm_on_another_datastore(
    env, lab, web01_export, restored_names, tmp_path
):
    name = "web01-restored"
    restored_names.append(name)
    res = run(
        env, "restore", "-s", str(web01_export), "--name", name, "--datastore", TARGET_DS, "-q"
    )
    assert res.code == 0, res
    assert len(_vms_named(env, name)) == 1
    files = _files_under(lab, TARGET_DS, name)
    assert {f"{name}.vmx", f"{name}.nvram", f"{name}.vmdk", f"{name}-flat.vmdk"} <= set(files), (
        files
    )
    assert not [f for f in files if f.endswith(".labupload")]

    again = tmp_path / "again"
    res = run(env, "mount", "-a", f"name:{name}", "-r", str(again), "-q")
    assert res.code == 0, res
    assert _hashes(again) == _hashes(web01_export)
    assert run(env, "verify", str(again)).code == 0


def test_round_trip_from_a_cbt_repository_run(env, lab, lab_client, restored_names, tmp_path):
    """Restore run 2 of a CBT repository (full, churn, incremental, churn again) as a new VM:
    its disks, exported again, equal the run's restore point and the lab's disks at run 2's
    snapshot, not the live VM that moved on."""
    import json

    assert run(env, "cbt", "enable", "-a", "name:web01").code == 0
    repo = tmp_path / "repo"
    for seed in (71, 72):
        res = run(env, "backup", "-a", "name:web01", "--repo", str(repo), "--json")
        assert res.code == 0, res
        lab_client.churn("web01", 3, seed=seed)
    point = tmp_path / "rp2"
    res = run(env, "restore-point", "--repo", str(repo), "--run", "2", "--out", str(point))
    assert res.code == 0, res
    disks = json.loads((point / "restore-point.json").read_text())["disks"]
    snapshot = json.loads(next(repo.glob("*/runs/000002/run.json")).read_text())["snapshot"][
        "moref"
    ]
    for disk in disks.values():
        assert (
            disk["sha256"]
            == lab_client.oracle(snapshot=snapshot, key=disk["key"], raw=True)["sha256"]
        )

    name = "web01-run2"
    restored_names.append(name)
    res = run(
        env,
        "restore",
        "--repo",
        str(repo),
        "--run",
        "2",
        "--name",
        name,
        "--datastore",
        TARGET_DS,
        "-q",
    )
    assert res.code == 0, res
    assert len(_vms_named(env, name)) == 1
    again = tmp_path / "again"
    assert run(env, "mount", "-a", f"name:{name}", "-r", str(again), "-q").code == 0
    assert _hashes(again) == {device: disk["sha256"] for device, disk in disks.items()}
    live = tmp_path / "live"
    assert run(env, "mount", "-a", "name:web01", "-r", str(live), "-q").code == 0
    assert _hashes(live) != _hashes(again)  # the churn after run 2 is not in the restore


def test_keep_refuses_an_existing_vm_and_leaves_it_alone(env, lab, lab_client, web01_export):
    before = lab_client.state("web01")
    res = run(env, "restore", "-s", str(web01_export), "-b", "keep")  # same name as the source VM
    assert res.code == 14, res
    assert "already exists" in res.err and "Traceback" not in res.err
    assert lab_client.state("web01")["disks"] == before["disks"]
    assert len(_vms_named(env, "web01")) == 1


def test_keep_refuses_existing_files(env, lab, web01_export, restored_names):
    name = "restore-files-taken"
    restored_names.append(name)
    ep = lab_endpoint(lab)
    ep.write_file(TARGET_DS, f"{name}/{name}.vmx", b'displayName = "someone else"\n')
    try:
        res = run(env, "restore", "-s", str(web01_export), "--name", name, "--datastore", TARGET_DS)
        assert res.code == 14, res
        assert f"{name}.vmx" in res.err
        assert _files_under(lab, TARGET_DS, name) == [f"{name}.vmx"]
        assert ep.read_file(TARGET_DS, f"{name}/{name}.vmx") == b'displayName = "someone else"\n'
        assert not _vms_named(env, name)
    finally:
        ep.path(TARGET_DS, f"{name}/{name}.vmx").unlink()


def test_overwrite_replaces_the_vm_only_after_upload(env, lab, web01_export, restored_names):
    name = "restore-overwrite"
    restored_names.append(name)
    assert (
        run(
            env, "restore", "-s", str(web01_export), "--name", name, "--datastore", TARGET_DS, "-q"
        ).code
        == 0
    )
    first = _vms_named(env, name)
    res = run(
        env,
        "restore",
        "-s",
        str(web01_export),
        "--name",
        name,
        "--datastore",
        TARGET_DS,
        "-b",
        "overwrite",
        "-q",
    )
    assert res.code == 0, res
    second = _vms_named(env, name)
    assert len(second) == 1 and second != first
    # The new VM went beside the old one; the old VM's files went only after it registered.
    assert _files_under(lab, TARGET_DS, name) == []
    assert f"{name}-flat.vmdk" in _files_under(lab, TARGET_DS, f"{name}_1")


def _with_missing_disk(export: Path, copy: Path) -> None:
    """A copy of ``export`` whose .vmx also names a disk that is nowhere: it verifies (the
    manifest is updated) and uploads, but registering it fails (the lab cannot open the disk)."""
    import hashlib
    import shutil

    shutil.copytree(export, copy)
    vmx = next(copy.glob("*.vmx"))
    vmx.write_text(
        vmx.read_text() + 'scsi0:9.present = "TRUE"\nscsi0:9.fileName = "nowhere.vmdk"\n'
    )
    manifest = copy / "MANIFEST.sha256"
    digest = hashlib.sha256(vmx.read_bytes()).hexdigest()
    manifest.write_text(
        "".join(
            f"{digest}  {vmx.name}\n" if line.endswith(f"  {vmx.name}") else line + "\n"
            for line in manifest.read_text().splitlines()
        )
    )


def test_overwrite_puts_the_old_vm_back_when_the_new_one_fails_to_register(
    env, lab, web01_export, restored_names, tmp_path
):
    name = "restore-rollback"
    restored_names.append(name)
    assert (
        run(
            env, "restore", "-s", str(web01_export), "--name", name, "--datastore", TARGET_DS, "-q"
        ).code
        == 0
    )
    old_files = _files_under(lab, TARGET_DS, name)
    broken = tmp_path / "broken"
    _with_missing_disk(web01_export, broken)
    res = run(
        env,
        "restore",
        "-s",
        str(broken),
        "--name",
        name,
        "--datastore",
        TARGET_DS,
        "-b",
        "overwrite",
    )
    assert res.code != 0, res
    assert "Traceback" not in res.err and "nowhere.vmdk" in res.err
    assert len(_vms_named(env, name)) == 1  # the old VM, registered again
    assert _files_under(lab, TARGET_DS, name) == old_files  # and its files untouched
    assert _files_under(lab, TARGET_DS, f"{name}_1") == []  # the failed upload removed
    again = tmp_path / "again"
    assert run(env, "mount", "-a", f"name:{name}", "-r", str(again), "-q").code == 0
    assert _hashes(again) == _hashes(web01_export)


def test_vcbrestore_with_vcb_flags_keeps_then_overwrites(
    env, lab, web01_export, restored_names, tmp_path
):
    """scripts/vcbRestore as a backup product runs it: VCB's -h -u -p -s -b, the VM's own name
    from the export; -b keep refuses the existing VM (exit 14), -b overwrite replaces it."""
    import subprocess

    from tests.e2e.cli import ROOT

    name = "restore-vcb"
    restored_names.append(name)
    assert (
        run(
            env, "restore", "-s", str(web01_export), "--name", name, "--datastore", TARGET_DS, "-q"
        ).code
        == 0
    )
    export = tmp_path / "export"  # an export whose own name is restore-vcb
    assert run(env, "mount", "-a", f"name:{name}", "-r", str(export), "-q").code == 0
    first = _vms_named(env, name)
    flags_env = {
        k: v
        for k, v in env.items()
        if k
        not in ("VCBPROXY_SERVER", "VCBPROXY_USER", "VCBPROXY_PASSWORD", "VCBPROXY_PASSWORD_FILE")
    }
    vcb = [
        str(ROOT / "scripts" / "vcbRestore"),
        "-h",
        f"127.0.0.1:{lab.info['https_port']}",
        "-u",
        lab.info["user"],
        "-p",
        lab.password,
        "-s",
        str(export),
    ]
    proc = subprocess.run(
        [*vcb, "-b", "keep"], env=flags_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 14, proc.stderr
    assert "already exists" in proc.stderr and lab.password not in proc.stdout + proc.stderr
    assert _vms_named(env, name) == first
    proc = subprocess.run(
        [*vcb, "-b", "overwrite"], env=flags_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    second = _vms_named(env, name)
    assert len(second) == 1 and second != first
    again = tmp_path / "again"
    assert run(env, "mount", "-a", f"name:{name}", "-r", str(again), "-q").code == 0
    assert _hashes(again) == _hashes(web01_export)


def test_damaged_export_is_refused_before_any_upload(env, lab, web01_export, tmp_path):
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(web01_export, copy)
    meta = metadata(copy)
    extent = copy / meta["disks"][0]["files"][-1]
    with open(extent, "r+b") as f:
        f.seek(extent.stat().st_size - 4096)
        f.write(b"\xff" * 16)
    name = "restore-damaged"
    res = run(env, "restore", "-s", str(copy), "--name", name, "--datastore", TARGET_DS)
    assert res.code == 16, res
    assert extent.name in res.err
    assert _files_under(lab, TARGET_DS, name) == []
    assert not _vms_named(env, name)


def test_upload_cut_halfway_leaves_nothing_registered_and_no_stray_files(
    env, lab, lab_client, web01_export
):
    """Cut while the second disk uploads: the first disk's files are complete on the datastore
    by then, so the restore must really delete what it uploaded."""
    name = "restore-cut"
    lab_client.set_faults(throttle_bps=4 << 20)
    proc = start(
        env, "restore", "-s", str(web01_export), "--name", name, "--datastore", TARGET_DS, "-q"
    )
    root = lab_endpoint(lab).path(TARGET_DS, name)
    deadline = time.monotonic() + 60

    def second_upload_running() -> bool:
        done = [p for p in root.glob("*.vmdk") if p.is_file()]
        return bool(done) and bool(list(root.glob("*.labupload")))

    while time.monotonic() < deadline and not second_upload_running() and proc.poll() is None:
        time.sleep(0.02)
    assert second_upload_running(), "never saw a completed file while another uploaded"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    lab_client.set_faults(throttle_bps=None)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert not _vms_named(env, name)
    assert _files_under(lab, TARGET_DS, name) == []
    assert not lab_endpoint(lab).path(TARGET_DS, name).exists()  # nor the folder it made


def test_upload_dropped_by_the_host_fails_cleanly(
    env, lab, lab_client, web01_export, restored_names
):
    """The host drops the PUT mid-body (lab switch drop_after_bytes, every time): exit 13, no VM,
    nothing left on the datastore."""
    name = "restore-dropped"
    restored_names.append(name)  # cleans up should a broken restore register it anyway
    lab_client.set_faults(drop_after_bytes=3 << 20, drop_count=0)
    try:
        res = run(env, "restore", "-s", str(web01_export), "--name", name, "--datastore", TARGET_DS)
    finally:
        lab_client.set_faults(drop_after_bytes=None)
    assert res.code == 13, res
    assert "Traceback" not in res.err
    assert not _vms_named(env, name)
    assert _files_under(lab, TARGET_DS, name) == []
    assert not lab_endpoint(lab).path(TARGET_DS, name).exists()
