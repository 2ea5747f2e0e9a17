"""Snapshot create/remove on a lab VM, as ESXi does them on the files.

Create: every disk that is not independent gets a real delta (LabDisk.add_delta) and the VM
writes there from now on; the snapshot keeps the config as it was, one oracle mark and one CBT
change ID per disk (kept in lab.snapshot_history forever, for tests to check exports against).
Remove: the snapshot's delta is merged into its parent and its files deleted.
"""

from __future__ import annotations

from pyVmomi import vim

from vcblab.vm import LabSnapshot


def create_snapshot(
    lab, vm, name: str, description: str | None, memory: bool, quiesce: bool
) -> LabSnapshot:
    if lab.faults.take("fail_next_snapshot_create"):
        raise vim.fault.SnapshotFault(
            msg=f"An error occurred while saving the snapshot: "
            f"failed to create the delta disks of {vm.name} "
            "(lab fault switch fail_next_snapshot_create)."
        )
    if quiesce and vm.powered_on:
        if not vm.tools_running():
            raise vim.fault.ToolsUnavailable(
                msg="Cannot create a quiesced snapshot because VMware Tools is not running "
                f"in {vm.name}."
            )
        if lab.faults.get("fail_quiesce"):
            raise vim.fault.ApplicationQuiesceFault(
                msg="An error occurred while quiescing the virtual machine. The guest's "
                "quiescing scripts or VSS writers failed (lab fault switch fail_quiesce)."
            )
    # A snapshot stuns the VM: a change tracking setting made while it ran takes effect
    # now, before the disks are frozen (so this snapshot already carries change IDs).
    vm.apply_change_tracking()
    marks, change_ids, deltas, frozen = {}, {}, {}, {}
    for key, disk in sorted(vm.disks.items()):
        if vm.slots[key].independent:
            continue
        # One step under the disk's lock: a guest write (lab churn) must not land between
        # the mark and the new delta, or the oracle and the frozen layer would disagree.
        marks[key], change_id, frozen[key], deltas[key] = disk.snapshot()
        if change_id is not None and vm.cbt_enabled:
            change_ids[key] = change_id
    config = vm.config_info(layer_of=frozen, change_ids=change_ids)
    parent = vm.current_snapshot
    snap_id = 1 + max((s.id for s in vm.all_snapshots()), default=0)
    snap = LabSnapshot(
        lab,
        lab.next_moref("snapshot"),
        vm,
        name=name,
        description=description,
        snap_id=snap_id,
        quiesced=bool(quiesce and vm.powered_on),
        memory=bool(memory and vm.powered_on),
        parent=parent,
        config=config,
        layers=deltas,
        vmsn=f"{vm.file_stem}-Snapshot{snap_id}.vmsn",
    )
    (parent.children if parent else vm.root_snapshots).append(snap)
    vm.current_snapshot = snap
    lab.add(snap)
    lab.snapshot_history[snap.moref] = {"vm": vm.moref, "marks": marks, "change_ids": change_ids}
    (vm.dir_path / snap.vmsn).write_text(
        f"vcbproxy lab snapshot {snap_id}\nname = {name}\n", encoding="utf-8"
    )
    if snap.memory:
        # The guest's RAM: a sparse file of memSize (the lab has no RAM to save, only its size).
        with open(vm.dir_path / snap.vmem, "wb") as out:
            out.truncate(vm.memory_mb << 20)
    _write_vmsd(vm)
    vm.touch_config()
    return snap


def remove_snapshot(lab, snap: LabSnapshot, remove_children: bool) -> None:
    if lab.faults.take("fail_next_snapshot_remove"):
        raise vim.fault.SnapshotFault(
            msg=f"An error occurred while consolidating disks of "
            f"{snap.vm.name}: (lab fault switch "
            "fail_next_snapshot_remove)."
        )
    if remove_children:
        for child in list(snap.children):
            remove_snapshot(lab, child, True)
    vm = snap.vm
    for key, delta in snap.layers.items():
        disk = vm.disks.get(key)
        if disk is not None and delta in disk.layers:
            disk.remove_layer(disk.layers.index(delta))
    siblings = snap.parent.children if snap.parent else vm.root_snapshots
    at = siblings.index(snap)
    siblings[at : at + 1] = snap.children
    for child in snap.children:
        child.parent = snap.parent
    if vm.current_snapshot is snap:
        vm.current_snapshot = snap.parent
    lab.remove(snap.moref)
    (vm.dir_path / snap.vmsn).unlink(missing_ok=True)
    (vm.dir_path / snap.vmem).unlink(missing_ok=True)
    _write_vmsd(vm)
    vm.apply_change_tracking()  # removing a snapshot stuns the VM too
    vm.touch_config()


def remove_all(lab, vm) -> None:
    for snap in reversed(vm.all_snapshots()):
        remove_snapshot(lab, snap, False)


def _write_vmsd(vm) -> None:
    path = vm.dir_path / f"{vm.file_stem}.vmsd"
    snaps = vm.all_snapshots()
    if not snaps:
        path.unlink(missing_ok=True)
        return
    lines = [
        '.encoding = "UTF-8"',
        f'snapshot.numSnapshots = "{len(snaps)}"',
        f'snapshot.current = "{vm.current_snapshot.id if vm.current_snapshot else 0}"',
    ]
    for i, s in enumerate(snaps):
        lines += [
            f'snapshot{i}.uid = "{s.id}"',
            f'snapshot{i}.displayName = "{s.name}"',
            f'snapshot{i}.filename = "{s.vmsn}"',
            f'snapshot{i}.parent = "{s.parent.id if s.parent else 0}"',
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
