"""vim.VirtualMachine methods: snapshots, reconfigure (CBT), changed areas, power, destroy."""

from __future__ import annotations

import shutil

from pyVmomi import vim, vmodl

from vcblab import snapshots
from vcblab.cbt import InvalidChangeId
from vcblab.methods import method
from vcblab.tasks import start_task
from vcblab.vimdata import now
from vcblab.vm import LabVm


@method("CreateSnapshot_Task")
def create_snapshot(call, this, name, description=None, memory=False, quiesce=False):
    def work(task):
        snap = snapshots.create_snapshot(call.lab, this, name, description, memory, quiesce)
        return snap.ref()

    return start_task(call, this, "CreateSnapshot_Task", "VirtualMachine.createSnapshot", work)


@method("RemoveAllSnapshots_Task")
def remove_all_snapshots(call, this, consolidate=None, spec=None):
    return start_task(
        call,
        this,
        "RemoveAllSnapshots_Task",
        "VirtualMachine.removeAllSnapshots",
        lambda task: snapshots.remove_all(call.lab, this),
    )


@method("ReconfigVM_Task")
def reconfigure(call, this, spec):
    if spec.deviceChange:
        raise vmodl.fault.NotSupported(msg="The lab does not support device changes.")

    def work(task):
        if spec.name:
            this.name = spec.name
        if spec.changeTrackingEnabled is not None:
            this.cbt_enabled = bool(spec.changeTrackingEnabled)
            for disk in this.disks.values():
                if this.cbt_enabled and not disk.cbt.enabled:
                    disk.cbt.enable()
                elif not this.cbt_enabled and disk.cbt.enabled:
                    disk.cbt.disable()
        this.touch_config()

    return start_task(call, this, "ReconfigVM_Task", "VirtualMachine.reconfigure", work)


MAX_AREAS_PER_CALL = 2048


@method("QueryChangedDiskAreas")
def query_changed_disk_areas(
    call, this, snapshot=None, deviceKey=None, startOffset=0, changeId=None
):
    lab = call.lab
    with lab.lock:
        disk = this.disks.get(deviceKey)
        if disk is None:
            raise vmodl.fault.InvalidArgument(
                msg="A specified parameter was not correct: deviceKey", invalidProperty="deviceKey"
            )
        snap = lab.obj(snapshot._moId) if snapshot is not None else this.current_snapshot
        entry = lab.snapshot_history.get(snap.moref) if snap is not None else None
        if entry is None or getattr(snap, "vm", None) is not this:
            raise vmodl.fault.InvalidArgument(
                msg="A specified parameter was not correct: snapshot", invalidProperty="snapshot"
            )
        until = entry["change_ids"].get(deviceKey)
        if until is None:
            raise vim.fault.FileFault(
                msg=f"Change tracking was not enabled on {this.slots[deviceKey].datastore} "
                f"disk {deviceKey} of {this.name} when the snapshot was taken.",
                file=this._backing(deviceKey).fileName,
            )
        try:
            areas, covered = disk.query_changed(
                changeId or "", until, int(startOffset or 0), lab.faults.get("cbt_page_bytes")
            )
        except (InvalidChangeId, ValueError) as exc:
            raise vmodl.fault.InvalidArgument(
                msg=f"A specified parameter was not correct: changeId ({exc})",
                invalidProperty="changeId",
            ) from None
    max_areas = lab.faults.get("cbt_max_areas") or MAX_AREAS_PER_CALL
    if len(areas) > max_areas:
        # Like ESXi, answer a bounded number of areas and say how far the answer reaches; the
        # caller asks again from startOffset + length.
        areas = areas[:max_areas]
        covered = areas[-1][0] + areas[-1][1] - int(startOffset or 0)
    return vim.VirtualMachine.DiskChangeInfo(
        startOffset=int(startOffset or 0),
        length=covered,
        changedArea=[
            vim.VirtualMachine.DiskChangeInfo.DiskChangeExtent(start=o, length=n) for o, n in areas
        ],
    )


def _power(call, this, on: bool, name: str, desc: str):
    def work(task):
        if this.powered_on == on:
            raise vim.fault.InvalidPowerState(
                msg=f"The attempted operation cannot be performed in the current state "
                f"({'Powered on' if on else 'Powered off'}).",
                requestedState="poweredOn" if on else "poweredOff",
                existingState="poweredOn" if this.powered_on else "poweredOff",
            )
        this.powered_on = on
        this.boot_time = now() if on else None

    return start_task(call, this, name, desc, work)


@method("PowerOnVM_Task")
def power_on(call, this, host=None):
    return _power(call, this, True, "PowerOnVM_Task", "VirtualMachine.powerOn")


@method("PowerOffVM_Task")
def power_off(call, this):
    return _power(call, this, False, "PowerOffVM_Task", "VirtualMachine.powerOff")


def _forget(lab, vm) -> None:
    for snap in vm.all_snapshots():
        lab.remove(snap.moref)
    for disk in vm.disks.values():
        disk.close()
    lab.remove(vm.moref)


@method("UnregisterVM")
def unregister(call, this):
    with call.lab.lock:
        if this.powered_on:
            raise vim.fault.InvalidPowerState(
                msg="The VM must be powered off to unregister.",
                requestedState="poweredOff",
                existingState="poweredOn",
            )
        _forget(call.lab, this)


@method("Destroy_Task")
def destroy(call, this):
    if not isinstance(this, LabVm):
        return _destroy_entity(call, this)

    def work(task):
        if this.powered_on:
            raise vim.fault.InvalidPowerState(
                msg="The attempted operation cannot be performed in the current state "
                "(Powered on).",
                requestedState="poweredOff",
                existingState="poweredOn",
            )
        _forget(call.lab, this)
        dirs = {this.dir_path} | {this.disk_dir(k) for k in this.slots}
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)

    return start_task(call, this, "Destroy_Task", "VirtualMachine.destroy", work)


def _destroy_entity(call, this):
    """Destroy a folder (empty ones only: the lab does not cascade)."""

    def work(task):
        if (
            this.children()
            or this.parent is None
            or this is getattr(call.lab.datacenter, "vm_folder", None)
        ):
            raise vim.fault.InvalidState(
                msg=f"The lab can only destroy empty folders, not {this.name!r}."
            )
        call.lab.remove(this.moref)

    return start_task(call, this, "Destroy_Task", "ManagedEntity.destroy", work)
