"""Changed block tracking queries and the NFC export lease, against a real endpoint.

vcsim implements neither QueryChangedDiskAreas nor ExportSnapshot: there the behaviour
checked is that vcbproxy reports them as unsupported (exit 19), with no traceback and no
snapshot left behind. Where the endpoint supports "cbt", the areas themselves are checked.
"""

from __future__ import annotations

import pytest

from vcbproxy import errors
from vcbproxy.selectors import Selector
from vcbproxy.vsphere import cbt, files, snapshots
from vcbproxy.vsphere.collector import object_props
from vcbproxy.vsphere.inventory import find_vms, vm_object
from vcbproxy.vsphere.lease import ExportLease

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def snapshot_of_vm(session):
    """A VM with tracking on and a fresh snapshot; tracking and snapshot restored afterwards."""
    vm = next(v for v in find_vms(session, Selector("any")) if v.power_state == "poweredOn")
    was = object_props(session, vm_object(session, vm), ["config.changeTrackingEnabled"]).get(
        "config.changeTrackingEnabled", False
    )
    cbt.set_tracking(session, vm, True)
    snap = snapshots.create_snapshot(session, vm, "_vcbproxy-cbt-test_", timeout=60)
    try:
        yield vm, snap
    finally:
        try:
            snapshots.remove_snapshot(session, snap.moref, timeout=60)
        except errors.NotFoundError:
            pass
        cbt.set_tracking(session, vm, bool(was))


def test_changed_areas_cover_the_disk_or_are_unsupported(session, snapshot_of_vm, vsphere_endpoint):
    vm, snap = snapshot_of_vm
    _, disks = files.vm_files_at_snapshot(session, vm, snap)
    disk = disks[0]
    if "cbt" not in vsphere_endpoint.supports:
        with pytest.raises(errors.UnsupportedError, match="QueryChangedDiskAreas"):
            list(cbt.query_changed_areas(session, vm, snap, disk.key, "*", disk.capacity))
        return
    assert disk.change_id, "with tracking on, the snapshot's disk carries a change ID"
    areas = list(cbt.query_changed_areas(session, vm, snap, disk.key, "*", disk.capacity))
    assert areas, "a disk with data has allocated areas"
    for before, after in zip(areas, areas[1:], strict=False):
        assert before.end <= after.start  # sorted, not overlapping
    assert all(a.length > 0 and a.end <= disk.capacity for a in areas)
    # Since the snapshot's own change ID nothing changed at the snapshot.
    assert (
        list(cbt.query_changed_areas(session, vm, snap, disk.key, disk.change_id, disk.capacity))
        == []
    )
    with pytest.raises(errors.ChangeIdRejected):
        list(cbt.query_changed_areas(session, vm, snap, disk.key, "52 00 bogus/1", disk.capacity))


def test_export_lease_offers_the_disks_or_is_unsupported(session, snapshot_of_vm):
    vm, snap = snapshot_of_vm
    try:
        lease = ExportLease.for_snapshot(session, snap, timeout=60)
    except errors.UnsupportedError as exc:
        assert "ExportSnapshot" in str(exc)
        return
    with lease:
        disks = [u for u in lease.device_urls if u["disk"]]
        assert disks and all(u["url"].endswith(".vmdk") and u["key"] for u in disks)
        lease.progress(50)
        lease.complete()
    assert lease.done
    # Leaving by an exception aborts the lease instead of completing it.
    with pytest.raises(RuntimeError), ExportLease.for_snapshot(session, snap, timeout=60) as second:
        raise RuntimeError("transfer failed")
    assert second.done
    state = object_props(session, second.lease, ["state"]).get("state")
    assert str(state) in ("error", "done")
