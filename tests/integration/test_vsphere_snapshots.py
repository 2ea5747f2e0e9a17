"""Snapshots, tasks and a VM's files at a snapshot, against a real endpoint (lab and vcsim).

Every test removes what it created: the endpoint is shared by the whole session.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from vcbproxy import errors
from vcbproxy.selectors import Selector
from vcbproxy.vsphere import files, snapshots
from vcbproxy.vsphere.inventory import find_vms

pytestmark = pytest.mark.timeout(120)
NAME = "_VCB-BACKUP_"


@pytest.fixture
def vm(session):
    found = find_vms(session, Selector("any"))
    assert found, "the endpoint should offer a VM"
    vm = found[0]
    before = {s.moref for s in snapshots.list_snapshots(session, vm)}
    yield vm
    # Leave the shared endpoint as we found it, even when an assertion failed midway.
    for snap in reversed(snapshots.list_snapshots(session, vm)):
        if snap.moref not in before:
            try:
                snapshots.remove_snapshot(session, snap.moref, timeout=60)
            except errors.NotFoundError:
                pass


def test_create_list_find_remove(session, vm):
    first = snapshots.create_snapshot(session, vm, NAME, description="test one", timeout=60)
    assert first.moref and first.name == NAME and first.description == "test one"
    assert first.vm_moref == vm.moref
    assert datetime.fromisoformat(first.created.replace("Z", "+00:00")).tzinfo is not None
    second = snapshots.create_snapshot(session, vm, "other", timeout=60)

    listed = snapshots.list_snapshots(session, vm)
    morefs = [s.moref for s in listed]
    assert morefs.index(first.moref) < morefs.index(second.moref)  # oldest first
    parent = next(s for s in listed if s.moref == first.moref)
    assert second.moref in {c.moref for c in parent.children}  # the tree is kept
    assert [s.moref for s in snapshots.find_snapshots_named(session, vm, NAME)] == [first.moref]

    swept = snapshots.find_all_vcb_snapshots(session, name=NAME)
    assert [(v.moref, s.moref) for v, s in swept if v.moref == vm.moref] == [
        (vm.moref, first.moref)
    ]

    # Removing the parent keeps the child (removeChildren=False), as vcbMounter -U did.
    snapshots.remove_snapshot(session, first.moref, timeout=60)
    assert [s.moref for s in snapshots.list_snapshots(session, vm)][-1:] == [second.moref]
    assert snapshots.find_snapshots_named(session, vm, NAME) == []
    snapshots.remove_snapshot(session, second.moref, timeout=60)


def test_removing_a_removed_snapshot_is_not_found(session, vm):
    snap = snapshots.create_snapshot(session, vm, NAME, timeout=60)
    snapshots.remove_snapshot(session, snap.moref, timeout=60)
    with pytest.raises(errors.NotFoundError) as info:
        snapshots.remove_snapshot(session, snap.moref, timeout=60)
    assert snap.moref in str(info.value)


def test_files_at_snapshot(session, vm, vsphere_endpoint):
    live_before = files.live_disks(session, vm)
    assert live_before, "the VM should have a disk"
    snap = snapshots.create_snapshot(session, vm, NAME, timeout=60)
    config_files, disks = files.vm_files_at_snapshot(session, vm, snap)

    kinds = [f.kind for f in config_files]
    assert set(kinds) <= {"config", "nvram", "log"} and kinds.count("config") == 1
    vmx = next(f for f in config_files if f.kind == "config")
    assert str(vmx.location) == vm.vmx_path
    assert len({str(f.location) for f in config_files}) == len(config_files)
    assert not any(f.location.path.endswith(".vmdk") for f in config_files)

    assert [d.key for d in disks] == [d.key for d in live_before]
    for disk, before in zip(disks, live_before, strict=True):
        assert re.fullmatch(r"(scsi|ide|sata|nvme)\d+:\d+", disk.device_id)
        assert disk.capacity == before.capacity > 0
        assert disk.chain and all(
            layer.descriptor.location.path.endswith(".vmdk") for layer in disk.chain
        )
        assert all(layer.descriptor.kind == "diskDescriptor" for layer in disk.chain)
        # What the snapshot froze is what the VM was writing to just before it.
        assert str(disk.top.descriptor.location) == str(before.top.descriptor.location)

    live_after = files.live_disks(session, vm)
    if "delta_disks" in vsphere_endpoint.supports:
        # Behaviour checked where the server makes delta disks: the VM now writes to a new
        # layer on top of the frozen chain.
        for disk, after in zip(disks, live_after, strict=True):
            assert len(after.chain) == len(disk.chain) + 1
            assert str(after.top.descriptor.location) != str(disk.top.descriptor.location)
            assert [str(layer.descriptor.location) for layer in after.chain[:-1]] == [
                str(layer.descriptor.location) for layer in disk.chain
            ]
    snapshots.remove_snapshot(session, snap.moref, timeout=60)
