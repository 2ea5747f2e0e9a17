"""A VM's files and disks, live or as they were at a snapshot, as vcbproxy dataclasses.

At a snapshot the disks come from the SNAPSHOT's own config (``snapshot.config``), not the
live VM: a disk added or a chain grown after the snapshot must not leak into the export.
Files and their sizes come from the VM's ``layoutEx``; where a server lists a file without
its directory (vcsim does for the .vmx, .nvram and logs) the VM's directory is assumed,
which is how a .vmx refers to its own files.
"""

from __future__ import annotations

import posixpath

from pyVmomi import vim

from vcbproxy import errors
from vcbproxy.models import DatastoreFile, DatastorePath, DiskInfo, DiskLayer, SnapshotRef, VmRef
from vcbproxy.vsphere.collector import object_props
from vcbproxy.vsphere.faults import translated
from vcbproxy.vsphere.inventory import vm_object
from vcbproxy.vsphere.snapshots import snapshot_object

CONFIG_KINDS = ("config", "nvram", "log")
_BUS_PREFIX = [
    (vim.vm.device.VirtualSCSIController, "scsi"),
    (vim.vm.device.VirtualIDEController, "ide"),
    (vim.vm.device.VirtualSATAController, "sata"),
    (vim.vm.device.VirtualNVMEController, "nvme"),
]


def _path(name: str, vm_dir: DatastorePath | None) -> DatastorePath:
    loc = DatastorePath.parse(name)
    if (
        vm_dir is not None
        and "/" not in loc.path
        and loc.datastore == vm_dir.datastore
        and vm_dir.path
    ):
        loc = DatastorePath(loc.datastore, posixpath.join(vm_dir.path, loc.path))
    return loc


class _Layout:
    """layoutEx indexed: files by key and by datastore path, disk chains per snapshot."""

    def __init__(self, layout, vmx_path: str, datacenter: str):
        vmx = DatastorePath.parse(vmx_path) if vmx_path else None
        self.vm_dir = DatastorePath(vmx.datastore, posixpath.dirname(vmx.path)) if vmx else None
        self.datacenter = datacenter
        self.by_key: dict[int, DatastoreFile] = {}
        self.by_name: dict[str, DatastoreFile] = {}
        for f in (layout.file if layout else None) or []:
            try:
                loc = _path(f.name, self.vm_dir)
            except ValueError:
                continue
            df = DatastoreFile(loc, int(f.size or 0), str(f.type), datacenter)
            self.by_key[f.key] = df
            self.by_name.setdefault(str(loc), df)
        self.live_units = _units(layout.disk if layout else None)
        self.snapshot_units: dict[str, dict[int, list[list[int]]]] = {}
        for s in (layout.snapshot if layout else None) or []:
            self.snapshot_units[s.key._moId] = _units(s.disk)

    def config_files(self, vmx_path: str) -> list[DatastoreFile]:
        out = [f for f in self.by_key.values() if f.kind in CONFIG_KINDS]
        # Each path once (a relative and a full name may point at the same file).
        seen, result = set(), []
        for f in sorted(out, key=lambda f: (CONFIG_KINDS.index(f.kind), f.location.path)):
            if str(f.location) not in seen:
                seen.add(str(f.location))
                result.append(f)
        if vmx_path and not any(f.kind == "config" for f in result):
            result.insert(
                0, DatastoreFile(DatastorePath.parse(vmx_path), 0, "config", self.datacenter)
            )
        return result

    def layer(self, name: str, units: list[list[int]]) -> DiskLayer:
        loc = _path(name, None)
        desc = self.by_name.get(str(loc)) or DatastoreFile(
            loc, 0, "diskDescriptor", self.datacenter
        )
        extents: tuple[DatastoreFile, ...] = ()
        for unit in units:
            files = [self.by_key[k] for k in unit if k in self.by_key]
            if any(str(f.location) == str(loc) for f in files):
                extents = tuple(f for f in files if f.kind == "diskExtent")
                break
        return DiskLayer(desc, extents)


def _units(disks) -> dict[int, list[list[int]]]:
    return {d.key: [list(u.fileKey or []) for u in d.chain or []] for d in disks or []}


def _device_ids(devices) -> dict[int, str]:
    """controller key -> 'scsi0' etc., so a disk is named 'scsi0:1' as in the .vmx."""
    out = {}
    for dev in devices:
        for cls, prefix in _BUS_PREFIX:
            if isinstance(dev, cls):
                out[dev.key] = f"{prefix}{dev.busNumber}"
    return out


def _disks(devices, layout: _Layout, units: dict[int, list[list[int]]]) -> list[DiskInfo]:
    controllers = _device_ids(devices)
    disks = []
    for dev in devices:
        if not isinstance(dev, vim.vm.device.VirtualDisk):
            continue
        backing = dev.backing
        names = []
        b = backing
        # Every file backing has fileName (and delta backings a parent); other backings
        # (a raw device) have neither.
        while b is not None and getattr(b, "fileName", None):
            names.append(getattr(b, "fileName"))  # noqa: B009 - typed as the base BackingInfo
            b = getattr(b, "parent", None)
        if not names:
            continue  # raw device mappings without a file, etc.: nothing we can read
        names.reverse()  # base first
        chain = tuple(layout.layer(n, units.get(int(dev.key), [])) for n in names)
        capacity = int(dev.capacityInBytes or 0) or int(dev.capacityInKB or 0) * 1024
        label = dev.deviceInfo.label if dev.deviceInfo else f"disk {dev.key}"
        bus = controllers.get(int(dev.controllerKey or 0), f"ctl{dev.controllerKey}")
        disks.append(
            DiskInfo(
                key=dev.key,
                label=label,
                device_id=f"{bus}:{dev.unitNumber}",
                capacity=capacity,
                chain=chain,
                change_id=getattr(backing, "changeId", None) or "",
                disk_mode=getattr(backing, "diskMode", None) or "persistent",
                uuid=getattr(backing, "uuid", None) or "",
            )
        )
    return sorted(disks, key=lambda d: d.device_id)


def live_disks(session, vm: VmRef) -> list[DiskInfo]:
    """The VM's disks as configured now (capacity, mode, CBT change ID, current chain)."""
    with translated(f"reading the disks of {vm.name}"):
        props = object_props(
            session, vm_object(session, vm), ["config.hardware.device", "layoutEx"]
        )
    if "config.hardware.device" not in props:
        raise errors.NotFoundError(
            f"{vm.name}: its configuration is not readable (inaccessible VM?)"
        )
    layout = _Layout(props.get("layoutEx"), vm.vmx_path, vm.datacenter)
    return _disks(props["config.hardware.device"], layout, layout.live_units)


def vm_files_at_snapshot(
    session, vm: VmRef, snapshot: SnapshotRef
) -> tuple[list[DatastoreFile], list[DiskInfo]]:
    """(config files, disks) of the VM as of ``snapshot``: .vmx, .nvram and logs (not snapshot
    data/memory files, not disk files), and each disk's chain up to the frozen layer."""
    with translated(
        f"reading the files of {vm.name} at snapshot {snapshot.moref}", errors.SnapshotError
    ):
        vm_props = object_props(session, vm_object(session, vm), ["layoutEx"])
        snap_props = object_props(session, snapshot_object(session, snapshot), ["config"])
    config = snap_props.get("config")
    if config is None or config.hardware is None:
        raise errors.SnapshotError(
            f"snapshot {snapshot.moref} of {vm.name} has no readable configuration"
        )
    vmx_path = (config.files.vmPathName if config.files else "") or vm.vmx_path
    layout = _Layout(vm_props.get("layoutEx"), vmx_path, vm.datacenter)
    units = layout.snapshot_units.get(snapshot.moref) or layout.live_units
    disks = _disks(config.hardware.device or [], layout, units)
    return layout.config_files(vmx_path), disks
