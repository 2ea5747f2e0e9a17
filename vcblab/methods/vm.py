"""vim.VirtualMachine methods: snapshots, reconfigure (CBT), changed areas, power, destroy."""

from __future__ import annotations

import re
import shutil

from pyVmomi import vim, vmodl

from vcblab import snapshots
from vcblab.cbt import InvalidChangeId
from vcblab.events import post_vm_event
from vcblab.methods import method
from vcblab.tasks import check_not_busy, start_task
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


_DISK_CTK = re.compile(r"^scsi(\d+):(\d+)\.ctkenabled$", re.IGNORECASE)


def _truth(value) -> bool:
    return str(value).strip().upper() == "TRUE"


def _apply_extra_config(vm, options) -> None:
    """extraConfig as vSphere applies it: each key set, an empty value removes it.

    ``ctkEnabled`` and ``scsiX:Y.ctkEnabled`` are the VDDK guide's way to switch changed
    block tracking (the same as changeTrackingEnabled, disk by disk for the second).
    """
    for opt in options or []:
        key, value = opt.key or "", "" if opt.value is None else str(opt.value)
        disk_key = _DISK_CTK.match(key)
        if key.lower() == "ctkenabled":
            vm.cbt_enabled = _truth(value)
        elif disk_key:
            bus, unit = int(disk_key.group(1)), int(disk_key.group(2))
            slot = next((sl for sl in vm.slots.values() if bus == 0 and sl.unit == unit), None)
            if slot is None:
                raise vim.fault.InvalidDeviceSpec(
                    msg=f"{key}: the VM has no disk scsi{bus}:{unit}.", deviceIndex=0
                )
            slot.ctk = _truth(value) if value else None
        elif value:
            vm.extra_config[key] = value
        else:
            vm.extra_config.pop(key, None)


def _check_spec(this, spec) -> None:
    if spec.deviceChange:
        raise vmodl.fault.NotSupported(msg="The lab does not support device changes.")
    if spec.memoryMB is not None and (spec.memoryMB <= 0 or spec.memoryMB % 4):
        raise vmodl.fault.InvalidArgument(
            msg=f"Memory size {spec.memoryMB} MB is not a positive multiple of 4 MB.",
            invalidProperty="memoryMB",
        )
    if spec.numCPUs is not None and spec.numCPUs <= 0:
        raise vmodl.fault.InvalidArgument(
            msg=f"{spec.numCPUs} CPUs is not a valid count.", invalidProperty="numCPUs"
        )
    if this.powered_on and (spec.memoryMB is not None or spec.numCPUs is not None):
        # The lab's VMs have neither memory nor CPU hot-add enabled.
        raise vim.fault.InvalidPowerState(
            msg="Memory and CPU changes need the VM powered off (hot-add is not enabled).",
            requestedState="poweredOff",
            existingState="poweredOn",
        )


@method("ReconfigVM_Task")
def reconfigure(call, this, spec):
    _check_spec(this, spec)
    user = call.session.user

    def work(task):
        if spec.name:
            this.name = spec.name
        if spec.changeTrackingEnabled is not None:
            # vSphere sets ctkEnabled and every disk's scsiX:Y.ctkEnabled.
            this.cbt_enabled = bool(spec.changeTrackingEnabled)
            for slot in this.slots.values():
                slot.ctk = None
        _apply_extra_config(this, spec.extraConfig)
        if spec.annotation is not None:
            this.annotation = spec.annotation
        if spec.memoryMB is not None:
            this.memory_mb = int(spec.memoryMB)
        if spec.numCPUs is not None:
            this.cpus = int(spec.numCPUs)
        if not this.powered_on:
            this.apply_change_tracking()  # a running VM applies it at its next stun/unstun
        this.touch_config()
        post_vm_event(
            call.lab,
            vim.event.VmReconfiguredEvent,
            this,
            user,
            f"Reconfigured {this.inventory_name} on {this.host.inventory_name} in "
            f"{this.datacenter_name()}",
            chain_id=task.info.eventChainId,
            configSpec=spec,
        )

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
        if snapshot is None:
            until = _current_change_id(this, deviceKey)
        else:
            snap = lab.obj(snapshot._moId)
            entry = lab.snapshot_history.get(snapshot._moId)
            if entry is None or getattr(snap, "vm", None) is not this:
                raise vmodl.fault.InvalidArgument(
                    msg="A specified parameter was not correct: snapshot",
                    invalidProperty="snapshot",
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


def _current_change_id(vm, key: int) -> str | None:
    """Without a snapshot the changes are computed against the VM's current state, which the
    API reference allows only for a powered-off VM (a running one keeps writing)."""
    if vm.powered_on:
        raise vmodl.fault.InvalidArgument(
            msg="A specified parameter was not correct: snapshot (QueryChangedDiskAreas "
            "without a snapshot works only on a powered-off virtual machine)",
            invalidProperty="snapshot",
        )
    disk = vm.disks[key]
    return disk.cbt.change_id if disk.cbt.enabled else None


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
        # The disks are closed (power off) or opened (power on): a pending change tracking
        # setting takes effect, as at any stun/unstun.
        this.apply_change_tracking()
        post_vm_event(
            call.lab,
            vim.event.VmPoweredOnEvent if on else vim.event.VmPoweredOffEvent,
            this,
            user,
            f"{this.inventory_name} on {this.host.inventory_name} in "
            f"{this.datacenter_name()} is {'powered on' if on else 'powered off'}",
            chain_id=task.info.eventChainId,
        )

    user = call.session.user
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
        check_not_busy(call.lab, this)
        if this.powered_on:
            raise vim.fault.InvalidPowerState(
                msg="The VM must be powered off to unregister.",
                requestedState="poweredOff",
                existingState="poweredOn",
            )
        _forget(call.lab, this)
        post_vm_event(
            call.lab,
            vim.event.VmRemovedEvent,
            this,
            call.session.user,
            f"Removed {this.inventory_name} on {this.host.inventory_name} from "
            f"{this.datacenter_name()}",
        )


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
