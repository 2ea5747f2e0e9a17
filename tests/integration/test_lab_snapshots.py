"""Snapshots on real files: deltas qemu-img reads as a chain, tasks, faults."""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from pathlib import Path

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from tests.fixtures.lab import run_task
from vcblab.client import LabClient


def _vm(si, path):
    return si.content.searchIndex.FindByInventoryPath(f"lab-dc/vm/{path}")


def _host_path(lab, ds_path: str) -> Path:
    ds, rel = ds_path[1:].split("] ", 1)
    return Path(lab.info["datastores"][ds]) / rel


def _qemu_sha(path: Path, tmp_path: Path) -> str:
    out = tmp_path / f"{path.name}.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(path), str(out)], check=True)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    out.unlink()
    return digest


def _disks(config):
    return [d for d in config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]


def test_snapshot_delta_chain_read_by_qemu(lab, lab_si, tmp_path):
    client = LabClient(lab.info)
    vm = _vm(lab_si, "web01")
    snap = run_task(vm.CreateSnapshot_Task("backup", "test", False, True))
    try:
        current = _disks(vm.config)
        frozen = _disks(snap.config)
        for now, then in zip(current, frozen, strict=True):
            assert now.backing.parent.fileName == then.backing.fileName
            assert re.search(r"-\d{6}\.vmdk$", now.backing.fileName)
            assert _host_path(lab, now.backing.fileName).is_file()
        files = {f.name: f.type for f in vm.layoutEx.file}
        assert {d.backing.fileName for d in current} <= set(files)
        assert "snapshotData" in files.values()
        client.churn("web01", 5, seed=7)
        for disk in frozen:
            want = client.oracle(snapshot=snap._moId, key=disk.key)["sha256"]
            assert _qemu_sha(_host_path(lab, disk.backing.fileName), tmp_path) == want
        for disk in current:  # qemu-img follows the delta's parent hint down the chain
            want = client.oracle(vm="web01", key=disk.key)["sha256"]
            assert _qemu_sha(_host_path(lab, disk.backing.fileName), tmp_path) == want
            assert want != client.oracle(snapshot=snap._moId, key=disk.key)["sha256"]
    finally:
        run_task(snap.RemoveSnapshot_Task(removeChildren=False))
    assert vm.snapshot is None
    after = _disks(vm.config)
    assert all(d.backing.parent is None for d in after)
    assert not _host_path(lab, current[0].backing.fileName).exists()
    for disk in after:  # the merge kept the guest's writes
        want = client.oracle(vm="web01", key=disk.key)["sha256"]
        assert _qemu_sha(_host_path(lab, disk.backing.fileName), tmp_path) == want


def test_independent_disk_is_not_snapshotted(lab_si):
    vm = _vm(lab_si, "db01")
    snap = run_task(vm.CreateSnapshot_Task("s", None, False, False))
    try:
        names = [d.backing.fileName for d in _disks(vm.config)]
        assert all(re.search(r"-\d{6}\.vmdk$", n) for n in names[:2])
        assert names[2] == "[datastore2] db01/db01_2.vmdk"
    finally:
        run_task(snap.RemoveSnapshot_Task(removeChildren=False))


def test_remove_children_and_remove_all(lab_si):
    vm = _vm(lab_si, "files01")
    s1 = run_task(vm.CreateSnapshot_Task("one", None, False, False))
    run_task(vm.CreateSnapshot_Task("two", None, False, False))
    assert len(_disks(vm.config)[0].backing.fileName.split("-")) == 2
    run_task(s1.RemoveSnapshot_Task(removeChildren=True))
    assert vm.snapshot is None
    run_task(vm.CreateSnapshot_Task("a", None, False, False))
    run_task(vm.CreateSnapshot_Task("b", None, False, False))
    run_task(vm.RemoveAllSnapshots_Task())
    assert vm.snapshot is None
    assert _disks(vm.config)[0].backing.fileName == "[datastore2] files01/files01.vmdk"


def test_quiesce_without_tools_faults(lab_si):
    vm = _vm(lab_si, "notools")
    task = vm.CreateSnapshot_Task("q", None, False, True)
    with pytest.raises(vim.fault.ToolsUnavailable):
        WaitForTask(task)
    assert task.info.state == "error"
    assert vm.snapshot is None
    snap = run_task(vm.CreateSnapshot_Task("no-quiesce", None, False, False))  # works unquiesced
    run_task(snap.RemoveSnapshot_Task(removeChildren=False))


def test_fault_switches_fail_snapshot_operations(fresh_lab):
    from tests.fixtures.lab import connect

    si = connect(fresh_lab)
    client = LabClient(fresh_lab.info)
    vm = _vm(si, "web01")
    client.set_faults(fail_quiesce=True)
    with pytest.raises(vim.fault.ApplicationQuiesceFault):
        WaitForTask(vm.CreateSnapshot_Task("q", None, False, True))
    client.set_faults(fail_quiesce=False, fail_next_snapshot_create=True)
    with pytest.raises(vim.fault.SnapshotFault):
        WaitForTask(vm.CreateSnapshot_Task("x", None, False, False))
    snap = run_task(vm.CreateSnapshot_Task("y", None, False, False))  # one-shot: works again
    client.set_faults(fail_next_snapshot_remove=True)
    with pytest.raises(vim.fault.SnapshotFault):
        WaitForTask(snap.RemoveSnapshot_Task(removeChildren=False))
    assert vm.snapshot is not None
    run_task(snap.RemoveSnapshot_Task(removeChildren=False))
    assert vm.snapshot is None


def test_task_delay_shows_running_task(fresh_lab):
    from tests.fixtures.lab import connect

    si = connect(fresh_lab)
    LabClient(fresh_lab.info).set_faults(task_delay=1.0)
    vm = _vm(si, "files01")
    task = vm.CreateSnapshot_Task("slow", None, False, False)
    time.sleep(0.4)
    assert task.info.state == "running"
    assert task.info.entityName == "files01"
    WaitForTask(task)
    assert task.info.state == "success" and task.info.progress == 100


def test_power_operations(fresh_lab):
    from tests.fixtures.lab import connect

    vm = _vm(connect(fresh_lab), "files01")
    with pytest.raises(vim.fault.InvalidPowerState):
        WaitForTask(vm.PowerOffVM_Task())
    run_task(vm.PowerOnVM_Task())
    assert vm.runtime.powerState == "poweredOn" and vm.guest.ipAddress == "10.0.0.13"


def test_memory_snapshot_has_a_memory_file(lab, lab_si):
    vm = _vm(lab_si, "my vm ünïcode %2f test")
    snap = run_task(vm.CreateSnapshot_Task("mem", None, True, False))
    try:
        layout = vm.layoutEx
        mine = [s for s in layout.snapshot if s.key == snap][0]
        memory = [f for f in layout.file if f.key == mine.memoryKey][0]
        assert memory.type == "snapshotMemory" and memory.name.endswith(".vmem")
        assert _host_path(lab, memory.name).is_file()
    finally:
        run_task(snap.RemoveSnapshot_Task(removeChildren=False))
    assert not _host_path(lab, memory.name).exists()


@pytest.mark.parametrize("vm_name", ["chain01", "chain02"])
def test_every_default_delta_chain_is_the_oracle_for_qemu_and_dissect(
    lab, lab_si, tmp_path, vm_name
):
    """The default VMs' user snapshot chains (SEsparse on VMFS6, vmfsSparse on VMFS5): the
    layer each snapshot froze, and the running top, read as the oracle by qemu-img and
    dissect.hypervisor, neither of which vcbproxy or the lab wrote."""
    from tests.vmdk_peers import dissect_sha256, qemu_compare

    client = LabClient(lab.info)
    vm = _vm(lab_si, vm_name)
    checked = 0
    for layout in vm.layoutEx.snapshot:
        files = {f.key: f.name for f in vm.layoutEx.file}
        descriptor = files[layout.disk[0].chain[-1].fileKey[0]]
        truth = client.oracle(snapshot=layout.key._moId, key=layout.disk[0].key, raw=True)
        qemu_compare(_host_path(lab, descriptor), Path(truth["path"]))
        assert dissect_sha256(_host_path(lab, descriptor)) == truth["sha256"], descriptor
        checked += 1
    top = _disks(vm.config)[0].backing.fileName
    assert "-00000" in top
    now = client.oracle(vm=vm_name, key=2000, raw=True)  # the guest writes only when asked
    qemu_compare(_host_path(lab, top), Path(now["path"]))
    assert dissect_sha256(_host_path(lab, top)) == now["sha256"]
    assert checked == 2
