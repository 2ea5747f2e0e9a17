"""A lab VM (vim.VirtualMachine) and its snapshots (vim.vm.Snapshot).

The VM owns real files in a directory on a datastore: .vmx, .nvram, vmware.log, and disks
that are LabDisk objects (descriptor + extent, deltas per snapshot). Its vSphere properties
(config, runtime, guest, summary, snapshot, layoutEx ...) are built from that state on demand.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pyVmomi import vim

from vcblab import vmx
from vcblab.inventory import Entity, refs
from vcblab.model import LabObject
from vcblab.vimdata import complete, now

SCSI_KEY = 1000
DELTA_DISK_FORMAT = {"vmfsSparse": "redoLogFormat", "seSparse": "seSparseFormat"}
DISK_KEY_BASE = 2000
NIC_KEY = 4000
MODES = {
    "persistent": "persistent",
    "independent_persistent": "independent_persistent",
    "independent-persistent": "independent_persistent",
}


@dataclasses.dataclass
class DiskSlot:
    """Where a disk sits: datastore, VM directory on it, SCSI unit, and its mode."""

    datastore: str
    directory: str
    unit: int
    mode: str = "persistent"
    ctk: bool | None = None  # scsi0:<unit>.ctkEnabled as configured (None: not set)

    @property
    def independent(self) -> bool:
        return self.mode.startswith("independent")


def ds_path(datastore: str, *parts: str) -> str:
    return f"[{datastore}] " + "/".join(parts)


class LabVm(Entity):
    vim_type = vim.VirtualMachine

    def __init__(
        self,
        lab,
        moref,
        name,
        parent,
        *,
        datastore: str,
        directory: str,
        uuid: str,
        instance_uuid: str,
        guest_id: str = "otherLinux64Guest",
        memory_mb: int = 1024,
        cpus: int = 1,
        tools: bool = True,
        ip: str | None = None,
        powered_on: bool = False,
    ):
        super().__init__(lab, moref, name, parent)
        self.datastore = datastore
        self.directory = directory
        self.uuid, self.instance_uuid = uuid, instance_uuid
        self.guest_id, self.memory_mb, self.cpus = guest_id, memory_mb, cpus
        self.tools, self.ip, self.powered_on = tools, ip, powered_on
        # Until placed (make_vm, RegisterVM): the first host and pool of its datacenter.
        dc = self.datacenter() or lab.datacenter
        self.host = dc.hosts[0] if dc is not None and dc.hosts else None
        self.pool = self.host.parent.pool if self.host is not None else lab.resource_pool
        self.network = dc.networks[0] if dc is not None and dc.networks else None
        self.disks: dict = {}  # device key -> LabDisk
        self.slots: dict[int, DiskSlot] = {}  # device key -> DiskSlot
        self.root_snapshots: list[LabSnapshot] = []
        self.current_snapshot: LabSnapshot | None = None
        self.cbt_enabled = False  # ctkEnabled as configured; disks follow at a stun/unstun
        self.annotation = "vcbproxy lab VM"
        self.extra_config: dict[str, str] = {}  # extraConfig keys the lab has no meaning for
        self.change_version = 1
        self.boot_time = now() if powered_on else None

    # -- files ---------------------------------------------------------------------------

    def ds(self, name: str):
        """The datastore ``name`` of this VM's datacenter (names are unique only there)."""
        ds = self.lab.find_datastore(name, self.datacenter())
        if ds is None:
            raise KeyError(f"no datastore {name!r} in the datacenter of {self.name}")
        return ds

    @property
    def dir_path(self) -> Path:
        return self.ds(self.datastore).path / self.directory

    @property
    def file_stem(self) -> str:
        return self.directory

    @property
    def vmx_name(self) -> str:
        return f"{self.file_stem}.vmx"

    @property
    def vmx_path(self) -> str:
        return ds_path(self.datastore, self.directory, self.vmx_name)

    @property
    def mac(self) -> str:
        """The NIC's address: VMware's 00:50:56 prefix for static MACs, the rest from the
        VM's BIOS UUID so it stays the same across lab starts."""
        tail = bytes.fromhex(self.uuid.replace("-", "")[-6:])
        return "00:50:56:" + ":".join(
            f"{b & 0x3F if i == 0 else b:02x}" for i, b in enumerate(tail)
        )

    def disk_dir(self, key: int) -> Path:
        slot = self.slots[key]
        return self.ds(slot.datastore).path / slot.directory

    def datastore_names(self) -> set[str]:
        return {self.datastore} | {s.datastore for s in self.slots.values()}

    def datastore_objects(self) -> list:
        return [self.ds(n) for n in sorted(self.datastore_names())]

    def write_vmx(self) -> None:
        disks = []
        for key, slot in sorted(self.slots.items()):
            disk = self.disks[key]
            top = disk.top
            rel = (
                top
                if slot.datastore == self.datastore and slot.directory == self.directory
                else f"/vmfs/volumes/{slot.datastore}/{slot.directory}/{top}"
            )
            disks.append(
                {"unit": slot.unit, "file": rel, "mode": slot.mode, "ctk": self.disk_ctk(key)}
            )
        text = vmx.render(
            name=self.name,
            uuid=self.uuid,
            instance_uuid=self.instance_uuid,
            guest_os=self.guest_id,
            memory_mb=self.memory_mb,
            cpus=self.cpus,
            disks=disks,
            cbt=self.cbt_enabled,
            nvram=f"{self.file_stem}.nvram",
            annotation=self.annotation,
            extra=self.extra_config,
            nic={"network": self.network.name, "mac": self.mac}
            if self.network is not None
            else None,
        )
        (self.dir_path / self.vmx_name).write_text(text, encoding="utf-8")

    def touch_config(self) -> None:
        self.change_version += 1
        self.write_vmx()

    # -- changed block tracking --------------------------------------------------------------

    def disk_ctk(self, key: int) -> bool:
        """scsi0:N.ctkEnabled as the .vmx and extraConfig show it: the disk's own setting,
        else the VM's (vSphere writes both when changeTrackingEnabled is set)."""
        slot = self.slots[key]
        return self.cbt_enabled if slot.ctk is None else slot.ctk

    def apply_change_tracking(self) -> None:
        """Make the disks track (or stop) as configured. ESXi does this when it opens the
        disks: at power on and at a stun/unstun (snapshot create/remove/revert, resume) of a
        running VM, or at once for a powered-off one (VDDK guide, "Enable Changed Block
        Tracking"); until then a running VM's disks keep the state they had."""
        for key, disk in self.disks.items():
            want = self.cbt_enabled and self.disk_ctk(key)
            if want and not disk.cbt.enabled:
                disk.cbt.enable()
            elif not want and disk.cbt.enabled:
                disk.cbt.disable()

    def extra_config_values(self) -> list:
        """config.extraConfig: ctkEnabled, scsi0:N.ctkEnabled per disk, then the rest."""
        values = [("ctkEnabled", "TRUE" if self.cbt_enabled else "FALSE")]
        for key, slot in sorted(self.slots.items()):
            values.append(
                (f"scsi0:{slot.unit}.ctkEnabled", "TRUE" if self.disk_ctk(key) else "FALSE")
            )
        values += sorted(self.extra_config.items())
        return [vim.option.OptionValue(key=k, value=v) for k, v in values]

    # -- devices -------------------------------------------------------------------------

    def _backing(self, key: int, layer_index: int | None = None, change_id: str | None = None):
        """The FlatVer2 backing of a disk at `layer_index` (default: top), parents chained."""
        disk, slot = self.disks[key], self.slots[key]
        layers = list(disk.layers)
        formats = disk.layer_formats()
        top = len(layers) - 1 if layer_index is None else layer_index
        ds_ref = self.ds(slot.datastore).ref()
        backing = None
        for i in range(top + 1):
            b = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                fileName=ds_path(slot.datastore, slot.directory, layers[i]),
                datastore=ds_ref,
                diskMode=slot.mode,
                thinProvisioned=True,
                split=False,
                writeThrough=False,
                uuid=_disk_uuid(disk.uuid, i),
                contentId=f"{abs(hash((disk.uuid, i))):032x}"[:32],
                parent=backing,
                # what the API says of each delta: vmfsSparse is a redo log, SEsparse has 4 KiB grains
                deltaDiskFormat=DELTA_DISK_FORMAT.get(formats[i]) if i else None,
                deltaGrainSize=4 if i and formats[i] == "seSparse" else None,
            )
            backing = b
        if change_id or disk.cbt.enabled:  # the disk's own state, not the configured one
            backing.changeId = change_id or disk.cbt.change_id
        return backing

    def devices(self, layer_of=None, change_ids=None) -> list:
        """Virtual hardware; `layer_of[key]` pins each disk to a layer (snapshot config)."""
        ctrl = vim.vm.device.VirtualLsiLogicController(
            key=SCSI_KEY,
            busNumber=0,
            sharedBus="noSharing",
            controllerKey=100,
            unitNumber=3,
            device=[DISK_KEY_BASE + s.unit for s in self.slots.values()],
            deviceInfo=vim.Description(label="SCSI controller 0", summary="LSI Logic"),
        )
        devs = [ctrl]
        for n, (key, slot) in enumerate(sorted(self.slots.items())):
            disk = self.disks[key]
            label = f"Hard disk {n + 1}"
            devs.append(
                vim.vm.device.VirtualDisk(
                    key=key,
                    controllerKey=SCSI_KEY,
                    unitNumber=slot.unit,
                    capacityInKB=disk.capacity // 1024,
                    capacityInBytes=disk.capacity,
                    deviceInfo=vim.Description(
                        label=label, summary=f"{disk.capacity // 1024:,} KB"
                    ),
                    backing=self._backing(
                        key, (layer_of or {}).get(key), (change_ids or {}).get(key)
                    ),
                    diskObjectId=f"{self.moref[3:]}-{key}",
                )
            )
        if self.network is not None:
            devs.append(
                vim.vm.device.VirtualVmxnet3(
                    key=NIC_KEY,
                    controllerKey=100,
                    unitNumber=7,
                    deviceInfo=vim.Description(
                        label="Network adapter 1", summary=self.network.inventory_name
                    ),
                    backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
                        deviceName=self.network.inventory_name, network=self.network.ref()
                    ),
                    connectable=vim.vm.device.VirtualDevice.ConnectInfo(
                        startConnected=True,
                        allowGuestControl=True,
                        connected=self.powered_on,
                        status="ok",
                    ),
                    addressType="manual",
                    macAddress=self.mac,
                    wakeOnLanEnabled=True,
                )
            )
        return devs

    def config_info(self, layer_of=None, change_ids=None):
        files = vim.vm.FileInfo(
            vmPathName=self.vmx_path,
            snapshotDirectory=ds_path(self.datastore, self.directory),
            suspendDirectory=ds_path(self.datastore, self.directory),
            logDirectory=ds_path(self.datastore, self.directory),
        )
        hw = complete(
            vim.vm.VirtualHardware(
                numCPU=self.cpus,
                numCoresPerSocket=1,
                memoryMB=self.memory_mb,
                device=self.devices(layer_of, change_ids),
            )
        )
        cfg = vim.vm.ConfigInfo(
            changeVersion=str(self.change_version),
            modified=now(),
            name=self.inventory_name,
            guestFullName="Other Linux (64-bit)",
            version="vmx-19",
            uuid=self.uuid,
            instanceUuid=self.instance_uuid,
            template=False,
            guestId=self.guest_id,
            alternateGuestName="",
            files=files,
            flags=complete(vim.vm.FlagInfo()),
            defaultPowerOps=complete(vim.vm.DefaultPowerOpInfo()),
            hardware=hw,
            changeTrackingEnabled=self.cbt_enabled,
            annotation=self.annotation,
            firmware="bios",
            extraConfig=self.extra_config_values(),
        )
        return complete(cfg)

    # -- properties -----------------------------------------------------------------------

    def p_config(self):
        return self.config_info()

    def p_resourcePool(self):
        return self.pool.ref()

    def p_datastore(self):
        return refs(self.datastore_objects(), vim.Datastore.Array)

    def p_network(self):
        return refs([self.network], vim.Network.Array) if self.network is not None else None

    def p_capability(self):
        return complete(
            vim.vm.Capability(
                snapshotOperationsSupported=True,
                multipleSnapshotsSupported=True,
                quiescedSnapshotsSupported=True,
                memorySnapshotsSupported=True,
                changeTrackingSupported=True,
                diskSharesSupported=True,
                revertToSnapshotSupported=True,
            )
        )

    def p_runtime(self):
        return complete(
            vim.vm.RuntimeInfo(
                host=self.host.ref(),
                connectionState="connected",
                powerState="poweredOn" if self.powered_on else "poweredOff",
                bootTime=self.boot_time if self.powered_on else None,
                consolidationNeeded=False,
                toolsInstallerMounted=False,
                maxMemoryUsage=self.memory_mb,
                faultToleranceState="notConfigured",
                onlineStandby=False,
            )
        )

    def tools_running(self) -> bool:
        return self.tools and self.powered_on

    def p_guest(self):
        running = self.tools_running()
        return complete(
            vim.vm.GuestInfo(
                toolsStatus="toolsOk"
                if running
                else "toolsNotRunning"
                if self.tools
                else "toolsNotInstalled",
                toolsRunningStatus="guestToolsRunning" if running else "guestToolsNotRunning",
                toolsVersionStatus2="guestToolsCurrent" if self.tools else "guestToolsNotInstalled",
                toolsVersion="12352" if self.tools else "0",
                guestId=self.guest_id if running else None,
                guestFullName="Other Linux (64-bit)" if running else None,
                ipAddress=self.ip if running else None,
                hostName=self.name.replace(" ", "-") if running else None,
                guestState="running" if running else "notRunning",
                guestOperationsReady=running,
                interactiveGuestOperationsReady=False,
                guestStateChangeSupported=running,
            )
        )

    def p_summary(self):
        running = self.tools_running()
        return complete(
            vim.vm.Summary(
                vm=self.ref(),
                runtime=self.p_runtime(),
                guest=vim.vm.Summary.GuestSummary(
                    guestId=self.guest_id,
                    guestFullName="Other Linux (64-bit)",
                    toolsStatus=self.p_guest().toolsStatus,
                    ipAddress=self.ip if running else None,
                    hostName=self.name.replace(" ", "-") if running else None,
                ),
                config=complete(
                    vim.vm.Summary.ConfigSummary(
                        name=self.inventory_name,
                        template=False,
                        vmPathName=self.vmx_path,
                        memorySizeMB=self.memory_mb,
                        numCpu=self.cpus,
                        numVirtualDisks=len(self.disks),
                        uuid=self.uuid,
                        instanceUuid=self.instance_uuid,
                        guestId=self.guest_id,
                        guestFullName="Other Linux (64-bit)",
                        numEthernetCards=1 if self.network is not None else 0,
                    )
                ),
                quickStats=complete(vim.vm.Summary.QuickStats(guestHeartbeatStatus="green")),
                overallStatus="green",
            )
        )

    def p_snapshot(self):
        if not self.root_snapshots:
            return None
        return vim.vm.SnapshotInfo(
            currentSnapshot=self.current_snapshot.ref(),
            rootSnapshotList=[s.tree() for s in self.root_snapshots],
        )

    def p_rootSnapshot(self):
        return refs(self.root_snapshots, vim.vm.Snapshot.Array) if self.root_snapshots else None

    def p_layoutEx(self):
        from vcblab.layout import layout_ex

        return layout_ex(self)

    def p_guestHeartbeatStatus(self):
        return "green" if self.tools_running() else "gray"

    # -- snapshots ------------------------------------------------------------------------

    def all_snapshots(self) -> list[LabSnapshot]:
        out = []

        def walk(snaps):
            for s in snaps:
                out.append(s)
                walk(s.children)

        walk(self.root_snapshots)
        return out

    def describe(self) -> dict:
        """State for the control API's /lab/state."""
        return {
            "moref": self.moref,
            "name": self.name,
            "powered_on": self.powered_on,
            "cbt": self.cbt_enabled,
            "host": self.host.name if self.host is not None else None,
            "datacenter": self.datacenter().path if self.datacenter() is not None else None,
            "snapshots": [
                {
                    "moref": s.moref,
                    "name": s.name,
                    "id": s.id,
                    "parent": s.parent.moref if s.parent else None,
                    "quiesced": s.quiesced,
                    "description": s.description or "",
                    "created": s.create_time.isoformat(),
                }
                for s in self.all_snapshots()
            ],
            # Tasks still queued or running on the VM: a snapshot task a client gave up on
            # goes on here, and may leave a snapshot after the client has gone.
            "tasks": self._running_tasks(),
            "current_snapshot": self.current_snapshot.moref if self.current_snapshot else None,
            "leases": self._leases(),
            "disks": {
                str(k): {
                    "layers": list(d.layers),
                    "capacity": d.capacity,
                    "change_id": d.cbt.change_id if d.cbt.enabled else None,
                    "datastore": self.slots[k].datastore if k in self.slots else None,
                    "directory": self.slots[k].directory if k in self.slots else None,
                }
                for k, d in self.disks.items()
            },
        }

    def _running_tasks(self) -> list[dict]:
        from vcblab.tasks import LabTask

        return [
            {"moref": t.moref, "name": t.info.descriptionId, "state": t.info.state}
            for t in list(self.lab.objects.values())
            if isinstance(t, LabTask) and t.entity is self and t.info.state in ("queued", "running")
        ]

    def _leases(self) -> list[dict]:
        out = []
        for lease in list(self.lab.leases.values()):
            if lease.vm_moref == self.moref:
                lease.expired()  # brings a lease past its timeout to "error"
                out.append({"id": lease.id, "state": lease.state, "progress": lease.progress})
        return out


class LabSnapshot(LabObject):
    vim_type = vim.vm.Snapshot

    def __init__(
        self,
        lab,
        moref,
        vm: LabVm,
        *,
        name,
        description,
        snap_id: int,
        quiesced,
        memory,
        parent: LabSnapshot | None,
        config,
        layers: dict,
        vmsn: str,
    ):
        super().__init__(lab, moref)
        self.vm, self.name, self.description = vm, name, description
        self.id, self.quiesced, self.memory = snap_id, quiesced, memory
        self.parent = parent
        self.children: list[LabSnapshot] = []
        self.create_time = now()
        self.config = config  # ConfigInfo as of the snapshot
        self.layers = layers  # device key -> name of the delta this snapshot created
        self.vmsn = vmsn
        self.power_state = "poweredOn" if vm.powered_on else "poweredOff"

    @property
    def vmem(self) -> str:
        return self.vmsn.removesuffix(".vmsn") + ".vmem"

    def frozen_index(self, key: int) -> int | None:
        """Index (in the disk's current chain) of the layer this snapshot froze, or None
        for a disk the snapshot does not cover (independent disks)."""
        delta = self.layers.get(key)
        layers = list(self.vm.disks[key].layers) if key in self.vm.disks else []
        if delta is None or delta not in layers:
            return None
        return layers.index(delta) - 1

    def tree(self):
        return vim.vm.SnapshotTree(
            snapshot=self.ref(),
            vm=self.vm.ref(),
            name=self.name,
            description=self.description or "",
            id=self.id,
            createTime=self.create_time,
            state=self.power_state,
            quiesced=bool(self.quiesced),
            replaySupported=False,
            childSnapshotList=[c.tree() for c in self.children],
        )

    def p_config(self):
        return self.config

    def p_childSnapshot(self):
        return refs(self.children, vim.vm.Snapshot.Array) if self.children else None

    def p_vm(self):
        return self.vm.ref()


def _disk_uuid(uuid: str, layer: int) -> str:
    """Each layer of a chain has its own disk UUID; the base keeps the disk's."""
    if not layer:
        return uuid
    h = (uuid.replace("-", "").replace(" ", "") + "0" * 32)[:30]
    return f"{h}{layer:02x}"


def new_vm(lab, name: str, folder, *, datastore: str, **kwargs) -> LabVm:
    """A VM with a fresh directory `<escaped name>` (or `_1`, `_2` if taken) on `datastore`
    (of the folder's datacenter)."""
    root = lab.find_datastore(datastore, folder.datacenter()).path
    base = vmx.escape_name(name)
    directory, n = base, 0
    while (root / directory).exists():
        n += 1
        directory = f"{base}_{n}"
    (root / directory).mkdir(parents=True)
    vm = LabVm(
        lab, lab.next_moref("vm"), name, folder, datastore=datastore, directory=directory, **kwargs
    )
    return lab.add(vm)
