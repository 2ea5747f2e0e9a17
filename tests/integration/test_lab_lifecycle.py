"""VM lifecycle (destroy, unregister, register from a .vmx) and NFC export leases."""

from __future__ import annotations

import http.client
import ssl
import time
from pathlib import Path

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from tests.fixtures.lab import connect, run_task
from vcblab.client import LabClient


def _find(si, path):
    return si.content.searchIndex.FindByInventoryPath(f"lab-dc/vm/{path}")


def _get(lab, si, url: str) -> tuple[int, bytes]:
    path = url.split("/", 3)[3]
    ctx = ssl.create_default_context(cafile=lab.info["cert_file"])
    conn = http.client.HTTPSConnection("127.0.0.1", lab.info["https_port"], context=ctx, timeout=30)
    try:
        conn.request("GET", "/" + path, headers={"Cookie": si._stub.cookie})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_destroy_removes_vm_and_files(fresh_lab):
    si = connect(fresh_lab)
    vm = _find(si, "files01")
    vm_dir = Path(fresh_lab.info["datastores"]["datastore2"]) / "files01"
    assert (vm_dir / "files01.vmx").is_file()
    run_task(vm.Destroy_Task())
    assert _find(si, "files01") is None
    assert not vm_dir.exists()
    with pytest.raises(vim.fault.InvalidPowerState):
        WaitForTask(_find(si, "web01").Destroy_Task())


def test_unregister_and_register_from_vmx(fresh_lab):
    si = connect(fresh_lab)
    vm = _find(si, "teamA/dup")
    vmx_path = vm.config.files.vmPathName
    disk_before = [
        d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)
    ][0]
    vm.UnregisterVM()
    assert _find(si, "teamA/dup") is None
    folder = si.content.rootFolder.childEntity[0].vmFolder
    new = run_task(
        folder.RegisterVM_Task(path=vmx_path, name="dup-restored", asTemplate=False, pool=None)
    )
    assert new.name == "dup-restored" and new.runtime.powerState == "poweredOff"
    assert new.config.files.vmPathName == vmx_path
    disk = [d for d in new.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)][0]
    assert disk.backing.fileName == disk_before.backing.fileName
    assert disk.capacityInBytes == disk_before.capacityInBytes
    assert {f.type for f in new.layoutEx.file} >= {
        "config",
        "nvram",
        "diskDescriptor",
        "diskExtent",
    }
    with pytest.raises(vim.fault.AlreadyExists):
        WaitForTask(folder.RegisterVM_Task(path=vmx_path, asTemplate=False, pool=None))
    with pytest.raises(vim.fault.NotFound):
        WaitForTask(
            folder.RegisterVM_Task(path="[datastore1] nope/nope.vmx", asTemplate=False, pool=None)
        )
    snap = run_task(new.CreateSnapshot_Task("after-register", None, False, False))
    run_task(snap.RemoveSnapshot_Task(removeChildren=False))


def test_export_lease_lifecycle(lab, lab_si):
    with pytest.raises(vim.fault.InvalidPowerState):
        _find(lab_si, "web01").ExportVm()
    vm = _find(lab_si, "files01")
    lease = vm.ExportVm()
    assert lease.state == "ready"
    urls = lease.info.deviceUrl
    assert [u.url.split("/nfc/")[0] for u in urls] == ["https://*"]
    assert urls[0].url.endswith("/2000.vmdk") and urls[0].disk
    status, body = _get(lab, lab_si, urls[0].url)
    assert status == 200 and body[:4] == b"KDMV"  # a streamOptimized VMDK
    lease.HttpNfcLeaseProgress(50)
    assert lease.transferProgress == 50
    lease.HttpNfcLeaseComplete()
    assert lease.state == "done"
    assert _get(lab, lab_si, urls[0].url)[0] == 410
    with pytest.raises(vim.fault.InvalidState):
        lease.HttpNfcLeaseProgress(60)
    aborted = vm.ExportVm()
    aborted.HttpNfcLeaseAbort()
    assert aborted.state == "error"


def test_export_snapshot_lease(lab, lab_si):
    vm = _find(lab_si, "chain01")
    first = vm.snapshot.rootSnapshotList[0].snapshot
    lease = first.ExportSnapshot()
    try:
        assert lease.info.entity == vm
        status, body = _get(lab, lab_si, lease.info.deviceUrl[0].url)
        assert status == 200 and body[:4] == b"KDMV"
    finally:
        lease.HttpNfcLeaseComplete()


def test_lease_times_out_without_progress(fresh_lab):
    si = connect(fresh_lab)
    LabClient(fresh_lab.info).set_faults(lease_timeout=0.5)
    lease = _find(si, "files01").ExportVm()
    assert lease.state == "ready"
    time.sleep(0.8)
    assert lease.state == "error"
    assert isinstance(lease.error, vim.fault.Timedout)
    with pytest.raises(vim.fault.Timedout):
        lease.HttpNfcLeaseProgress(10)


def test_file_manager_make_and_delete(lab, lab_si):
    fm = lab_si.content.fileManager
    dc = lab_si.content.rootFolder.childEntity[0]
    root = Path(lab.info["datastores"]["datastore2"])
    fm.MakeDirectory("[datastore2] fm-test/sub", dc, True)
    assert (root / "fm-test" / "sub").is_dir()
    with pytest.raises(vim.fault.FileAlreadyExists):
        fm.MakeDirectory("[datastore2] fm-test/sub", dc, False)
    (root / "fm-test" / "sub" / "x.vmdk").write_text("descriptor")
    (root / "fm-test" / "sub" / "x-flat.vmdk").write_text("extent")
    run_task(
        lab_si.content.virtualDiskManager.DeleteVirtualDisk_Task(
            "[datastore2] fm-test/sub/x.vmdk", dc
        )
    )
    assert list((root / "fm-test" / "sub").iterdir()) == []
    run_task(fm.DeleteDatastoreFile_Task("[datastore2] fm-test", dc))
    assert not (root / "fm-test").exists()
    with pytest.raises(vim.fault.FileNotFound):
        WaitForTask(fm.DeleteDatastoreFile_Task("[datastore2] fm-test", dc))
    with pytest.raises(vim.fault.InvalidDatastorePath):
        WaitForTask(fm.DeleteDatastoreFile_Task("[datastore2] ../../etc", dc))
