"""vim.vm.FileLayoutEx of a lab VM: every file it owns, disk chains, and per-snapshot chains.

A backup tool copies exactly what layoutEx lists, so this must list every real file: config,
nvram, log, snapshot list/data, and each disk layer's descriptor and extent (plus CBT files).
"""

from __future__ import annotations

from pathlib import Path

from pyVmomi import vim

from vcblab.vimdata import now
from vcblab.vm import ds_path

_KIND = {"ctk": "diskDescriptor"}  # vSphere lists -ctk.vmdk files as descriptors


class _Files:
    def __init__(self):
        self.entries: list = []
        self.keys: dict[str, int] = {}

    def add(self, name: str, kind: str, path: Path) -> int:
        if name in self.keys:
            return self.keys[name]
        key = len(self.entries)
        try:
            st = path.stat()
            size, used, ok = st.st_size, st.st_blocks * 512, True
        except OSError:
            size, used, ok = 0, 0, False
        self.entries.append(
            vim.vm.FileLayoutEx.FileInfo(
                key=key, name=name, type=kind, size=size, uniqueSize=used, accessible=ok
            )
        )
        self.keys[name] = key
        return key


def _layer_files(file_kinds) -> dict[str, list[tuple[str, str]]]:
    """Descriptor name -> its files (descriptor, then extent), from the engine's file list."""
    groups: dict[str, list[tuple[str, str]]] = {}
    current = None
    for name, kind in file_kinds:
        if kind == "diskDescriptor":
            current = groups.setdefault(name, [])
        if kind in ("diskDescriptor", "diskExtent") and current is not None:
            current.append((name, kind))
    return groups


def _layer_unit(files: _Files, vm, key: int, layer: str, groups):
    slot = vm.slots[key]
    keys = [
        files.add(ds_path(slot.datastore, slot.directory, name), kind, vm.disk_dir(key) / name)
        for name, kind in groups.get(layer, [])
    ]
    return vim.vm.FileLayoutEx.DiskUnit(fileKey=keys)


def layout_ex(vm):
    files = _Files()
    d, ds = vm.directory, vm.datastore
    files.add(vm.vmx_path, "config", vm.dir_path / vm.vmx_name)
    # ESXi writes nvram and vmware.log at the first power-on: a VM registered from uploaded
    # files may have neither, and layoutEx lists only what exists.
    nvram = vm.dir_path / f"{vm.file_stem}.nvram"
    if nvram.exists():
        files.add(ds_path(ds, d, nvram.name), "nvram", nvram)
    snaps = vm.all_snapshots()
    if snaps:
        files.add(
            ds_path(ds, d, f"{vm.file_stem}.vmsd"),
            "snapshotList",
            vm.dir_path / f"{vm.file_stem}.vmsd",
        )
    kinds = {key: vm.disks[key].file_kinds() for key in vm.disks}
    disks, groups = [], {key: _layer_files(kinds[key]) for key in kinds}
    for key in sorted(vm.disks):
        layers = list(vm.disks[key].layers)
        disks.append(
            vim.vm.FileLayoutEx.DiskLayout(
                key=key, chain=[_layer_unit(files, vm, key, layer, groups[key]) for layer in layers]
            )
        )
    # The rest of the disk engine's files (CBT ctk files) belong to the VM too.
    for key in sorted(vm.disks):
        slot = vm.slots[key]
        for name, kind in kinds[key]:
            files.add(
                ds_path(slot.datastore, slot.directory, name),
                _KIND.get(kind, kind),
                vm.disk_dir(key) / name,
            )
    snapshot_layouts = []
    for snap in snaps:
        data_key = files.add(ds_path(ds, d, snap.vmsn), "snapshotData", vm.dir_path / snap.vmsn)
        chain_disks = []
        for key in sorted(vm.disks):
            layers = list(vm.disks[key].layers)
            frozen = snap.frozen_index(key)
            if frozen is None:
                continue
            chain_disks.append(
                vim.vm.FileLayoutEx.DiskLayout(
                    key=key,
                    chain=[
                        _layer_unit(files, vm, key, layer, groups[key])
                        for layer in layers[: frozen + 1]
                    ],
                )
            )
        memory_key = -1
        if snap.memory:
            memory_key = files.add(
                ds_path(ds, d, snap.vmem), "snapshotMemory", vm.dir_path / snap.vmem
            )
        snapshot_layouts.append(
            vim.vm.FileLayoutEx.SnapshotLayout(
                key=snap.ref(), dataKey=data_key, memoryKey=memory_key, disk=chain_disks
            )
        )
    if (vm.dir_path / "vmware.log").exists():
        files.add(ds_path(ds, d, "vmware.log"), "log", vm.dir_path / "vmware.log")
    return vim.vm.FileLayoutEx(
        file=files.entries, disk=disks, snapshot=snapshot_layouts, timestamp=now()
    )
