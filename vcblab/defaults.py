"""The default VMs of the lab, each covering something that breaks real backup tools.

Everything (UUIDs, disk content, IPs) is derived from the lab seed, so two labs started with
the same seed hold the same bytes.
"""

from __future__ import annotations

import hashlib
import uuid as uuidlib

from vcblab.disks import LabDisk
from vcblab.snapshots import create_snapshot
from vcblab.vm import DISK_KEY_BASE, DiskSlot, new_vm

# name, folder (None = the datacenter's vm folder), power, tools, ip, disks [(datastore, mode)]
DEFAULT_VMS = [
    (
        "web01",
        None,
        True,
        True,
        "10.0.0.11",
        [("datastore1", "persistent"), ("datastore2", "persistent")],
    ),
    (
        "db01",
        None,
        True,
        True,
        "10.0.0.12",
        [
            ("datastore1", "persistent"),
            ("datastore1", "persistent"),
            ("datastore2", "independent_persistent"),
        ],
    ),
    ("files01", None, False, True, "10.0.0.13", [("datastore2", "persistent")]),
    ("notools", None, True, False, None, [("datastore1", "persistent")]),
    ("my vm ünïcode / test", None, True, True, "10.0.0.15", [("datastore1", "persistent")]),
    ("dup", "teamA", False, True, "10.0.0.16", [("datastore1", "persistent")]),
    ("dup", "teamB", False, True, "10.0.0.17", [("datastore2", "persistent")]),
    ("chain01", None, True, True, "10.0.0.18", [("datastore1", "persistent")]),  # VMFS6: SEsparse
    ("chain02", None, True, True, "10.0.0.19", [("datastore2", "persistent")]),  # VMFS5: vmfsSparse
    ("nfs01", None, True, True, "10.0.0.20", [("nfsstore", "persistent")]),
]
# VMs that come with a chain of user snapshots, each with guest writes in every layer
CHAINS = ("chain01", "chain02")
# VMs outside the first datacenter, in their datacenter's VM folder: datacenter path, name,
# power, tools, ip, disks. web02 lives on the second datacenter's datastore1, a name the
# first datacenter has too.
TOPOLOGY_VMS = [
    (
        "emea/lab-dc2",
        "web02",
        True,
        True,
        "10.0.1.11",
        [("datastore1", "persistent"), ("datastore1", "persistent")],
    ),
]


def _derive(seed: int, *parts) -> bytes:
    return hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()


def _uuid(seed: int, *parts) -> str:
    return str(uuidlib.UUID(bytes=_derive(seed, *parts)[:16], version=4))


def _int(seed: int, *parts) -> int:
    return int.from_bytes(_derive(seed, *parts)[:4], "big")


def make_vm(
    lab,
    name: str,
    folder,
    *,
    index: int,
    powered_on: bool,
    tools: bool,
    ip: str | None,
    disks: list[tuple[str, str]],
    disk_size: int,
    host=None,
):
    """Create a VM with its files: .vmx, .nvram, vmware.log and real disks; on ``host`` (a
    HostSystem of the folder's datacenter), else on its datacenter's hosts in turn."""
    seed = lab.seed
    vm = new_vm(
        lab,
        name,
        folder,
        datastore=disks[0][0],
        uuid=_uuid(seed, index, name, "bios"),
        instance_uuid=_uuid(seed, index, name, "instance"),
        tools=tools,
        ip=ip,
        powered_on=powered_on,
        memory_mb=1024 + 1024 * (len(disks) - 1),
        cpus=len(disks),
    )
    hosts = vm.datacenter().hosts
    vm.host = host if host is not None else hosts[index % len(hosts)]
    vm.pool = vm.host.parent.pool
    for unit, (datastore, mode) in enumerate(disks):
        key = DISK_KEY_BASE + unit
        slot = DiskSlot(datastore=datastore, directory=vm.directory, unit=unit, mode=mode)
        directory = vm.ds(datastore).path / vm.directory
        directory.mkdir(parents=True, exist_ok=True)
        basename = vm.file_stem if unit == 0 else f"{vm.file_stem}_{unit}"
        vm.slots[key] = slot
        vm.disks[key] = LabDisk.create(
            directory,
            basename,
            disk_size,
            seed=_int(seed, index, name, unit),
            uuid=_uuid(seed, index, name, "disk", unit),
            delta_format=lab.delta_format(datastore, disk_size, vm.datacenter()),
        )
    vm.write_vmx()
    (vm.dir_path / f"{vm.file_stem}.nvram").write_bytes(
        b"NVRAM\x00" + _derive(seed, index, name, "nvram") * 256
    )
    (vm.dir_path / "vmware.log").write_text(
        f"vmx| I005: vcbproxy lab VM {name}\nvmx| I005: powerState = "
        f"{'on' if powered_on else 'off'}\n",
        encoding="utf-8",
    )
    return vm


def populate(
    lab, *, extra_vms: int = 0, disk_size: int = 32 << 20, big_vms: dict[str, int] | None = None
) -> None:
    """The default VM set, ``extra_vms`` plain ones, and ``big_vms`` (name -> capacity of its one
    disk) for benchmarks that need one large disk without making every VM large.

    The extra VMs are spread as a fleet of proxies finds them: over every host of every
    datacenter in turn, and over each datacenter's datastores (vm000 on esx01's datacenter's
    first datastore, vm001 on esx02, vm002 on esx03, ...)."""
    with lab.lock:
        dc = lab.datacenter
        specs = list(DEFAULT_VMS)
        placed: dict[str, object] = {}  # extra VM name -> its host
        hosts = lab.all_hosts
        for i in range(extra_vms):
            host = hosts[i % len(hosts)]
            stores = sorted(host.datacenter().datastores)
            datastore = stores[(i // len(hosts)) % len(stores)]
            name = f"vm{i:03d}"
            placed[name] = host
            specs.append((name, None, False, True, None, [(datastore, "persistent")]))
        specs += [
            (name, None, True, True, None, [("datastore1", "persistent")])
            for name in (big_vms or {})
        ]
        for index, (name, folder, on, tools, ip, disks) in enumerate(specs):
            host = placed.get(name)
            parent = (
                lab.team_folders[folder]
                if folder
                else host.datacenter().vm_folder
                if host is not None
                else dc.vm_folder
            )
            vm = make_vm(
                lab,
                name,
                parent,
                index=index,
                powered_on=on,
                tools=tools,
                ip=ip,
                disks=disks,
                disk_size=(big_vms or {}).get(name, disk_size),
                host=host,
            )
            if name in CHAINS:
                create_snapshot(lab, vm, "before-upgrade", "user snapshot 1", False, False)
                vm.disks[DISK_KEY_BASE].churn(2.0, _int(lab.seed, f"{name}-churn"))
                create_snapshot(lab, vm, "after-upgrade", "user snapshot 2", False, False)
                # the running delta holds guest writes too, as a VM's does
                vm.disks[DISK_KEY_BASE].churn(1.0, _int(lab.seed, f"{name}-churn-2"))
        for offset, (dc_path, name, on, tools, ip, disks) in enumerate(TOPOLOGY_VMS):
            dc = lab.datacenter_at(dc_path)
            make_vm(
                lab,
                name,
                dc.vm_folder,
                index=len(specs) + offset,
                powered_on=on,
                tools=tools,
                ip=ip,
                disks=disks,
                disk_size=disk_size,
            )
