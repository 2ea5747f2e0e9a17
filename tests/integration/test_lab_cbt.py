"""Changed block tracking: change IDs in backings, QueryChangedDiskAreas paging and faults."""

from __future__ import annotations

import pytest
from pyVmomi import vim, vmodl

from tests.fixtures.lab import connect, run_task
from vcblab.client import LabClient

BLOCK = 64 * 1024


def _disk(config, key=2000):
    return [d for d in config.hardware.device if d.key == key][0]


def _all_areas(vm, snap, key, change_id):
    """The caller's loop: page on startOffset + length until the disk is covered."""
    capacity = _disk(vm.config, key).capacityInBytes
    offset, areas, pages = 0, [], 0
    while offset < capacity:
        info = vm.QueryChangedDiskAreas(snap, key, offset, change_id)
        assert info.startOffset == offset and info.length > 0
        areas += [(a.start, a.length) for a in info.changedArea]
        offset += info.length
        pages += 1
    return areas, pages


@pytest.fixture
def cbt_vm(fresh_lab):
    si = connect(fresh_lab)
    vm = si.content.searchIndex.FindByInventoryPath("lab-dc/vm/web01")
    run_task(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=True)))
    assert vm.config.changeTrackingEnabled is True
    return fresh_lab, vm


def test_changed_areas_between_snapshots_with_paging(cbt_vm):
    lab, vm = cbt_vm
    client = LabClient(lab.info)
    client.set_faults(cbt_page_bytes=1 << 20)  # 1 MiB a call: a 4 MiB disk takes 4 pages
    s1 = run_task(vm.CreateSnapshot_Task("s1", None, False, False))
    cid1 = _disk(s1.config).backing.changeId
    assert cid1 and "/" in cid1
    full, pages = _all_areas(vm, s1, 2000, "*")
    assert pages == 4 and full  # "*": every allocated area
    run_task(s1.RemoveSnapshot_Task(removeChildren=False))
    written = client.churn("web01", 10, seed=3)["disks"]["2000"]
    s2 = run_task(vm.CreateSnapshot_Task("s2", None, False, False))
    cid2 = _disk(s2.config).backing.changeId
    assert cid2 != cid1 and cid2.split("/")[0] == cid1.split("/")[0]
    changed, _ = _all_areas(vm, s2, 2000, cid1)
    total = sum(length for _, length in changed)
    assert written <= total <= written + 2 * BLOCK * len(changed)
    assert all(start % BLOCK == 0 for start, _ in changed)
    nothing, _ = _all_areas(vm, s2, 2000, cid2)
    assert nothing == []
    run_task(s2.RemoveSnapshot_Task(removeChildren=False))


def test_bad_and_reset_change_ids_fault(cbt_vm):
    lab, vm = cbt_vm
    s1 = run_task(vm.CreateSnapshot_Task("s1", None, False, False))
    cid1 = _disk(s1.config).backing.changeId
    with pytest.raises(vmodl.fault.InvalidArgument) as err:
        vm.QueryChangedDiskAreas(s1, 2000, 0, "52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00/1")
    assert err.value.invalidProperty == "changeId"
    with pytest.raises(vmodl.fault.InvalidArgument):
        vm.QueryChangedDiskAreas(s1, 4242, 0, "*")
    run_task(s1.RemoveSnapshot_Task(removeChildren=False))
    LabClient(lab.info).set_faults(reset_cbt="web01")
    s2 = run_task(vm.CreateSnapshot_Task("s2", None, False, False))
    with pytest.raises(vmodl.fault.InvalidArgument):
        vm.QueryChangedDiskAreas(s2, 2000, 0, cid1)
    run_task(s2.RemoveSnapshot_Task(removeChildren=False))


def test_query_without_tracking_faults(fresh_lab):
    vm = connect(fresh_lab).content.searchIndex.FindByInventoryPath("lab-dc/vm/files01")
    snap = run_task(vm.CreateSnapshot_Task("s", None, False, False))
    assert _disk(snap.config).backing.changeId is None
    with pytest.raises(vim.fault.FileFault):
        vm.QueryChangedDiskAreas(snap, 2000, 0, "*")
