"""Turning changed block tracking on and off, and showing where it stands.

``ReconfigVM_Task(changeTrackingEnabled)`` alone does not start tracking on a running VM:
vSphere applies it at the next "stun/unstun" of the disks, which a snapshot create and
remove cycle provides. That is what ``enable`` does after the reconfigure.
"""

from __future__ import annotations

from vcbproxy.models import DiskInfo, VmRef

ACTIVATE_SNAPSHOT = "_vcbproxy-cbt-activate_"


def set_tracking(session, vm: VmRef, enabled: bool) -> list[DiskInfo]:
    from vcbproxy.jobs.backup_snapshot import JobSnapshot
    from vcbproxy.vsphere import cbt, snapshots  # pyVmomi: loaded only when a job talks to a server
    from vcbproxy.vsphere import files as vm_files  # pyVmomi: only when talking to a server

    cbt.set_tracking(session, vm, enabled)
    with JobSnapshot(
        session,
        vm,
        name=ACTIVATE_SNAPSHOT,
        description="vcbproxy: makes a CBT change take effect",
        timeout=snapshots.DEFAULT_TIMEOUT,
    ) as cycle:
        cycle.take(quiesce=False)
        cycle.remove()
    return vm_files.live_disks(session, vm)


def status(session, vm: VmRef) -> list[DiskInfo]:
    from vcbproxy.vsphere import files as vm_files  # pyVmomi: only when talking to a server

    return vm_files.live_disks(session, vm)
