"""Changed block tracking: switch it on/off and ask which areas changed since a change ID.

A change ID the server no longer accepts (tracking reset or switched off, disk resized,
VM moved) comes back as InvalidArgument or a FileFault. That is :class:`errors.ChangeIdRejected`
(a SnapshotError, exit 12): the CBT job catches exactly this and falls back to a full read,
while any other failure stops the run.
"""

from __future__ import annotations

from collections.abc import Iterator

from pyVmomi import vim, vmodl

from vcbproxy import errors
from vcbproxy.models import ChangedArea, SnapshotRef, VmRef
from vcbproxy.vsphere.faults import fault_message, translated
from vcbproxy.vsphere.inventory import vm_object
from vcbproxy.vsphere.snapshots import snapshot_object
from vcbproxy.vsphere.tasks import wait_for_task

ALL = "*"  # the change ID meaning "every allocated area" (a first, full backup)


def set_tracking(session, vm: VmRef, enabled: bool, *, timeout: float = 600.0) -> None:
    what = f"{'enabling' if enabled else 'disabling'} changed block tracking on {vm.name}"
    spec = vim.vm.ConfigSpec(changeTrackingEnabled=enabled)
    with translated(what):
        task = vm_object(session, vm).ReconfigVM_Task(spec=spec)
    wait_for_task(session, task, timeout=timeout, what=what)


def query_changed_areas(
    session, vm: VmRef, snapshot: SnapshotRef, device_key: int, change_id: str, capacity: int
) -> Iterator[ChangedArea]:
    """Areas changed between ``change_id`` and ``snapshot`` (or allocated, for ``"*"``).

    The server answers for a window (startOffset, length) at a time; ask again from the
    end of each window until the whole disk is covered.
    """
    obj = vm_object(session, vm)
    snap = snapshot_object(session, snapshot)
    what = f"querying changed areas of disk {device_key} of {vm.name} since {change_id}"
    offset = 0
    while offset < capacity:
        try:
            with translated(what, errors.SnapshotError):
                info = obj.QueryChangedDiskAreas(
                    snapshot=snap, deviceKey=device_key, startOffset=offset, changeId=change_id
                )
        except errors.SnapshotError as exc:
            cause = exc.__cause__
            if isinstance(cause, vmodl.fault.InvalidArgument | vim.fault.FileFault):
                raise errors.ChangeIdRejected(
                    f"the server rejected change ID {change_id} for disk {device_key}: "
                    f"{fault_message(cause)}"
                ) from cause
            raise
        for area in info.changedArea or []:
            start, length = int(area.start), int(area.length)
            if start + length > capacity:
                length = max(0, capacity - start)
            if length:
                yield ChangedArea(start, length)
        window_end = int(info.startOffset) + int(info.length)
        if window_end <= offset:
            raise errors.SnapshotError(
                f"{what}: the server returned an empty window at offset {offset}"
            )
        offset = window_end
