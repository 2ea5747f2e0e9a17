"""The lab's inventory objects (folders, datacenters, clusters, hosts, datastores, pools, the
service singletons) and build_lab(), which lays out the default inventory under a root directory.

The inventory has the shape of a real vCenter's (a DatacenterSpec each): two datacenters, the
second inside a datacenter folder, each with a datastore named ``datastore1`` (a datastore
name is unique only inside its datacenter, so everything that names one also names the
datacenter); a DRS cluster in the first, a cluster without DRS in the second.
"""

from __future__ import annotations

import datetime
import shutil
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from pyVmomi import VmomiSupport, vim

from vcblab.model import Lab, LabObject
from vcblab.vmx import escape_name

# name -> file system: it decides how ESXi writes snapshot deltas there (vcblab.disks.delta_format)
DATASTORES = {"datastore1": "vmfs6", "datastore2": "vmfs5", "nfsstore": "nfs"}
VMFS_VERSIONS = {"vmfs5": "5.81", "vmfs6": "6.82"}
HOSTS = ("esx01.lab.local", "esx02.lab.local")


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    drs: bool  # without DRS, vCenter needs a host named to place a VM (RegisterVM, CreateVM)
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class DatacenterSpec:
    path: str  # inventory path below the root folder: "lab-dc", "emea/lab-dc2"
    clusters: tuple[ClusterSpec, ...]
    datastores: dict[str, str]  # name -> kind ("vmfs5", "vmfs6", "nfs")
    first_moref: int  # morefs of its objects are numbered from here (stable across starts)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def folder(self) -> str | None:
        """The datacenter folder it sits in (None: the root folder)."""
        return self.path.rsplit("/", 1)[0] if "/" in self.path else None


# The second datacenter reuses the name datastore1: only the datacenter tells them apart.
SECOND_DATACENTER = DatacenterSpec(
    path="emea/lab-dc2",
    clusters=(ClusterSpec("emea-cluster", False, ("esx03.lab.local",)),),
    datastores={"datastore1": "vmfs6"},
    first_moref=40,
)


class Entity(LabObject):
    """A vim.ManagedEntity: named, with a parent, children found by scanning for parent==self."""

    vim_type = vim.ManagedEntity

    def __init__(self, lab: Lab, moref: str, name: str, parent: Entity | None = None):
        super().__init__(lab, moref)
        self.name = name
        self.parent = parent

    @property
    def inventory_name(self) -> str:
        return escape_name(self.name)

    def p_name(self):
        return self.inventory_name

    def p_parent(self):
        return self.parent.ref() if self.parent is not None else None

    def p_overallStatus(self):
        return "green"

    def children(self) -> list[Entity]:
        return [o for o in self.lab.objects.values() if isinstance(o, Entity) and o.parent is self]

    def datacenter(self) -> Datacenter | None:
        """The datacenter this entity is in (itself for a datacenter), from the inventory."""
        node = self
        while node is not None and not isinstance(node, Datacenter):
            node = node.parent
        return node

    def datacenter_name(self) -> str:
        dc = self.datacenter()
        return dc.inventory_name if dc is not None else ""

    def inventory_path(self) -> str:
        """'/lab-dc/vm/teamA/dup': names as the inventory shows them, from the root folder
        (which is not named in a path)."""
        parts, node = [], self
        while node is not None and node.parent is not None:
            parts.append(node.inventory_name)
            node = node.parent
        return "/" + "/".join(reversed(parts))


def refs(objs, array=vim.ManagedEntity.Array):
    return array([o.ref() for o in objs])


class Folder(Entity):
    vim_type = vim.Folder

    def __init__(self, lab, moref, name, parent=None, child_type=("Folder",)):
        super().__init__(lab, moref, name, parent)
        self.child_type = list(child_type)

    def p_childEntity(self):
        return refs(self.children())

    def p_childType(self):
        return VmomiSupport.GetVmodlType("string[]")(self.child_type)


class Datacenter(Entity):
    vim_type = vim.Datacenter

    def __init__(self, lab, moref, name, parent=None):
        super().__init__(lab, moref, name, parent)
        self.datastores: dict[str, Datastore] = {}  # name -> datastore: unique per datacenter
        self.clusters: list[Cluster] = []
        self.hosts: list[HostSystem] = []
        self.networks: list[Network] = []

    @property
    def path(self) -> str:
        """The inventory path without the leading slash ("emea/lab-dc2"): /folder's dcPath."""
        return self.inventory_path().lstrip("/")

    def p_vmFolder(self):
        return self.vm_folder.ref()

    def p_hostFolder(self):
        return self.host_folder.ref()

    def p_datastoreFolder(self):
        return self.datastore_folder.ref()

    def p_networkFolder(self):
        return self.network_folder.ref()

    def p_datastore(self):
        return refs(self.datastores.values(), vim.Datastore.Array)

    def p_network(self):
        return refs(self.networks, vim.Network.Array)


class Network(Entity):
    """A standard port group network ("VM Network"), every host connected, every VM's NIC on it."""

    vim_type = vim.Network

    def p_summary(self):
        return vim.Network.Summary(
            network=self.ref(), name=self.inventory_name, accessible=True, ipPoolName=""
        )

    def p_host(self):
        return refs(self.datacenter().hosts, vim.HostSystem.Array)

    def p_vm(self):
        return refs((vm for vm in self.lab.vms() if vm.network is self), vim.VirtualMachine.Array)


class DatastoreBrowser(LabObject):
    """vim.host.DatastoreBrowser over some datastores (methods/browser.py searches them)."""

    vim_type = vim.host.DatastoreBrowser

    def __init__(self, lab, moref, datastores):
        super().__init__(lab, moref)
        self.datastores = datastores  # callable: -> list[Datastore]

    def p_datastore(self):
        return refs(self.datastores(), vim.Datastore.Array)

    def p_supportedType(self):
        return [
            vim.host.DatastoreBrowser.FolderQuery(),
            vim.host.DatastoreBrowser.VmConfigQuery(),
            vim.host.DatastoreBrowser.VmDiskQuery(),
            vim.host.DatastoreBrowser.VmLogQuery(),
            vim.host.DatastoreBrowser.VmNvramQuery(),
            vim.host.DatastoreBrowser.VmSnapshotQuery(),
            vim.host.DatastoreBrowser.Query(),
        ]


class Datastore(Entity):
    vim_type = vim.Datastore

    def __init__(self, lab, moref, name, parent, path: Path, kind: str = "vmfs6"):
        super().__init__(lab, moref, name, parent)
        self.path = path
        self.kind = kind  # "vmfs5", "vmfs6" or "nfs"
        self.browser = lab.add(DatastoreBrowser(lab, f"datastoreBrowser-{moref}", lambda: [self]))

    def p_browser(self):
        return self.browser.ref()

    def resolve(self, rel: str) -> Path | None:
        """The host path of ``rel`` on this datastore, or None if it leads out of it."""
        base = self.path.resolve()
        path = (base / rel.strip()).resolve()
        return path if path == base or base in path.parents else None

    def _space(self) -> tuple[int, int]:
        usage = shutil.disk_usage(self.path)
        return usage.total, usage.free

    def p_summary(self):
        total, free = self._space()
        return vim.Datastore.Summary(
            datastore=self.ref(),
            name=self.name,
            url=self.url,
            capacity=total,
            freeSpace=free,
            accessible=True,
            multipleHostAccess=True,
            type="NFS" if self.kind == "nfs" else "VMFS",
        )

    @property
    def url(self) -> str:
        return f"ds:///vmfs/volumes/{self.moref}/"

    def p_info(self):
        total, free = self._space()
        if self.kind == "nfs":
            return vim.host.NasDatastoreInfo(
                name=self.name,
                url=self.url,
                freeSpace=free,
                maxFileSize=62 << 40,
                maxVirtualDiskCapacity=62 << 40,
                nas=vim.host.NasVolume(
                    name=self.name,
                    type="NFS",
                    capacity=total,
                    remoteHost="nas.lab.local",
                    remotePath=f"/export/{self.name}",
                ),
            )
        return vim.host.VmfsDatastoreInfo(
            name=self.name,
            url=self.url,
            freeSpace=free,
            maxFileSize=62 << 40,
            maxVirtualDiskCapacity=62 << 40,
            vmfs=vim.host.VmfsVolume(
                name=self.name,
                type="VMFS",
                capacity=total,
                blockSizeMb=1,
                maxBlocks=63 << 20,
                majorVersion=int(self.kind[-1]),
                version=VMFS_VERSIONS[self.kind],
                uuid=f"{self.moref}-{self.kind}",
                ssd=False,
                local=False,
                extent=[
                    vim.host.ScsiDisk.Partition(
                        diskName=f"naa.6000c29{self.moref[-2:]:0>29}", partition=1
                    )
                ],
                vmfsUpgradable=self.kind == "vmfs5",
            ),
        )

    def p_host(self):
        return [
            vim.Datastore.HostMount(
                key=h.ref(),
                mountInfo=vim.host.MountInfo(
                    path=f"/vmfs/volumes/{self.name}",
                    accessMode="readWrite",
                    mounted=True,
                    accessible=True,
                ),
            )
            for h in self.datacenter().hosts
        ]

    def p_vm(self):
        return refs(
            (vm for vm in self.lab.vms() if self in vm.datastore_objects()),
            vim.VirtualMachine.Array,
        )


class HostSystem(Entity):
    vim_type = vim.HostSystem
    CPU_MHZ = 2400
    CORES = 8
    MEMORY = 64 << 30

    def __init__(self, lab, moref, name, parent=None):
        super().__init__(lab, moref, name, parent)
        self.boot_time = time.time()
        self.browser = lab.add(
            DatastoreBrowser(lab, f"hostDatastoreBrowser-{moref}", self._datastores)
        )

    def _datastores(self):
        return list(self.datacenter().datastores.values())

    def _running(self):
        return [vm for vm in self.lab.vms() if vm.host is self and vm.powered_on]

    def product(self):
        """The ESXi build the host runs (summary.config.product, config.product)."""
        return vim.AboutInfo(
            name="VMware ESXi",
            fullName="VMware ESXi 8.0.3 build-24022510 (vcbproxy lab)",
            vendor="VMware, Inc.",
            version="8.0.3",
            build="24022510",
            localeVersion="INTL",
            localeBuild="000",
            osType="vmnix-x86",
            productLineId="embeddedEsx",
            apiType="HostAgent",
            apiVersion="8.0.3.0",
            licenseProductName="VMware ESX Server",
            licenseProductVersion="8.0",
        )

    def p_runtime(self):
        return vim.host.RuntimeInfo(
            connectionState="connected",
            powerState="poweredOn",
            inMaintenanceMode=False,
            bootTime=datetime.datetime.fromtimestamp(self.boot_time, datetime.UTC),
        )

    def p_summary(self):
        running = self._running()
        return vim.host.Summary(
            host=self.ref(),
            runtime=self.p_runtime(),
            hardware=vim.host.Summary.HardwareSummary(
                vendor="VMware, Inc.",
                model="vcbproxy lab host",
                uuid=str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, self.name)),
                memorySize=self.MEMORY,
                cpuModel="Lab CPU @ 2.40GHz",
                cpuMhz=self.CPU_MHZ,
                numCpuPkgs=1,
                numCpuCores=self.CORES,
                numCpuThreads=self.CORES * 2,
                numNics=2,
                numHBAs=1,
            ),
            config=vim.host.Summary.ConfigSummary(
                name=self.name,
                port=443,
                vmotionEnabled=True,
                faultToleranceEnabled=False,
                product=self.product(),
            ),
            # A running vCPU shows as a light load; memory as what the running VMs were given.
            quickStats=vim.host.Summary.QuickStats(
                overallCpuUsage=sum(50 * vm.cpus for vm in running),
                overallMemoryUsage=1024 + sum(vm.memory_mb for vm in running),
                distributedCpuFairness=1000,
                distributedMemoryFairness=1000,
                uptime=int(time.time() - self.boot_time),
            ),
            rebootRequired=False,
            overallStatus="green",
            managementServerIp="127.0.0.1",
        )

    def p_config(self):
        return vim.host.ConfigInfo(host=self.ref(), product=self.product())

    def p_network(self):
        return refs(self.datacenter().networks, vim.Network.Array)

    def p_datastoreBrowser(self):
        return self.browser.ref()

    def p_vm(self):
        return refs((vm for vm in self.lab.vms() if vm.host is self), vim.VirtualMachine.Array)

    def p_datastore(self):
        return refs(self._datastores(), vim.Datastore.Array)


class Cluster(Entity):
    vim_type = vim.ClusterComputeResource

    def __init__(self, lab, moref, name, parent=None, *, drs: bool = True):
        super().__init__(lab, moref, name, parent)
        self.drs = drs  # without DRS, placing a VM needs a host (RegisterVM, CreateVM)
        self.hosts: list[HostSystem] = []
        self.pool: ResourcePool | None = None  # the root pool, "Resources"

    def p_configurationEx(self):
        return vim.cluster.ConfigInfoEx(
            drsConfig=vim.cluster.DrsConfigInfo(
                enabled=self.drs, defaultVmBehavior="fullyAutomated", vmotionRate=3
            ),
            dasConfig=vim.cluster.DasConfigInfo(enabled=False),
        )

    def p_summary(self):
        hosts = self.hosts
        mhz = sum(h.CPU_MHZ * h.CORES for h in hosts)
        memory = sum(h.MEMORY for h in hosts)
        return vim.ClusterComputeResource.Summary(
            totalCpu=mhz,
            totalMemory=memory,
            numCpuCores=sum(h.CORES for h in hosts),
            numCpuThreads=sum(2 * h.CORES for h in hosts),
            effectiveCpu=mhz,
            effectiveMemory=memory >> 20,
            numHosts=len(hosts),
            numEffectiveHosts=len(hosts),
            overallStatus="green",
            currentFailoverLevel=0,
            numVmotions=0,
        )

    def p_network(self):
        return refs(self.datacenter().networks, vim.Network.Array)

    def p_host(self):
        return refs(self.hosts, vim.HostSystem.Array)

    def p_resourcePool(self):
        return self.pool.ref()

    def p_datastore(self):
        return refs(self.datacenter().datastores.values(), vim.Datastore.Array)


class ResourcePool(Entity):
    """The cluster's root pool: unlimited, expandable, normal shares (vSphere's defaults)."""

    vim_type = vim.ResourcePool

    def p_owner(self):
        return self.parent.ref()

    @staticmethod
    def _allocation(shares: int):
        return vim.ResourceAllocationInfo(
            reservation=0,
            expandableReservation=True,
            limit=-1,
            shares=vim.SharesInfo(shares=shares, level="normal"),
            overheadLimit=-1,
        )

    def p_config(self):
        return vim.ResourceConfigSpec(
            entity=self.ref(),
            changeVersion="1",
            cpuAllocation=self._allocation(4000),
            memoryAllocation=self._allocation(163840),
        )

    def _usage(self, capacity: int, used: int):
        return vim.ResourcePool.ResourceUsage(
            reservationUsed=0,
            reservationUsedForVm=0,
            unreservedForPool=capacity,
            unreservedForVm=capacity,
            overallUsage=used,
            maxUsage=capacity,
        )

    def p_runtime(self):
        hosts = self.parent.hosts
        running = [vm for vm in self.lab.vms() if vm.pool is self and vm.powered_on]
        mhz = sum(h.CPU_MHZ * h.CORES for h in hosts)
        memory = sum(h.MEMORY for h in hosts)
        return vim.ResourcePool.RuntimeInfo(
            cpu=self._usage(mhz, sum(50 * vm.cpus for vm in running)),
            memory=self._usage(memory, sum(vm.memory_mb << 20 for vm in running)),
            overallStatus="green",
        )

    def p_summary(self):
        return vim.ResourcePool.Summary(
            name=self.inventory_name, config=self.p_config(), runtime=self.p_runtime()
        )

    def p_vm(self):
        return refs((vm for vm in self.lab.vms() if vm.pool is self), vim.VirtualMachine.Array)

    def p_resourcePool(self):
        return vim.ResourcePool.Array()


class Singleton(LabObject):
    def __init__(self, lab, moref, vim_type):
        super().__init__(lab, moref)
        self.vim_type = vim_type


class SessionManager(Singleton):
    """currentSession depends on who asks: the dispatcher records the caller per thread."""

    def p_currentSession(self):
        session = getattr(self.lab.caller, "session", None)
        return session.user_session() if session is not None else None

    def p_sessionList(self):
        return [s.user_session() for s in list(self.lab.sessions.values())]


class ServiceInstance(LabObject):
    vim_type = vim.ServiceInstance

    def p_content(self):
        from vcblab.methods.service import about

        lab = self.lab
        s = lab.singletons
        return vim.ServiceInstanceContent(
            rootFolder=lab.root_folder.ref(),
            propertyCollector=s["propertyCollector"].ref(),
            viewManager=s["viewManager"].ref(),
            about=about(lab.instance_uuid),
            sessionManager=s["sessionManager"].ref(),
            searchIndex=s["searchIndex"].ref(),
            taskManager=s["taskManager"].ref(),
            fileManager=s["fileManager"].ref(),
            virtualDiskManager=s["virtualDiskManager"].ref(),
            ovfManager=s["ovfManager"].ref(),
            eventManager=s["eventManager"].ref(),
        )

    def p_serverClock(self):
        import datetime

        return datetime.datetime.now(datetime.UTC)


_SINGLETONS = {
    "propertyCollector": ("propertyCollector", vim.PropertyCollector),
    "viewManager": ("ViewManager", vim.view.ViewManager),
    "sessionManager": ("SessionManager", vim.SessionManager),
    "searchIndex": ("SearchIndex", vim.SearchIndex),
    "taskManager": ("TaskManager", vim.TaskManager),
    "fileManager": ("FileManager", vim.FileManager),
    "virtualDiskManager": ("VirtualDiskManager", vim.VirtualDiskManager),
    "ovfManager": ("OvfManager", vim.OvfManager),
    "eventManager": ("EventManager", vim.event.EventManager),
}


def build_lab(root: Path, *, seed: int = 0, password: str | None = None) -> Lab:
    """The empty inventory: the service singletons, then each datacenter (DatacenterSpec) with its
    folders, cluster(s), hosts, pool, network and datastores."""
    root = Path(root)
    lab = Lab(root, password=password, seed=seed)
    lab.service_instance = lab.add(ServiceInstance(lab, "ServiceInstance"))
    from vcblab.history import EventManager, TaskManager

    special = {"eventManager": EventManager, "taskManager": TaskManager}
    lab.singletons = {}
    for key, (moref, t) in _SINGLETONS.items():
        if key in special:
            obj = special[key](lab, moref)
        elif key == "sessionManager":
            obj = SessionManager(lab, moref, t)
        else:
            obj = Singleton(lab, moref, t)
        lab.singletons[key] = lab.add(obj)
    lab.root_folder = lab.add(
        Folder(lab, "group-d1", "Datacenters", child_type=("Folder", "Datacenter"))
    )
    first = DatacenterSpec(
        path=lab.datacenter_name,
        clusters=(ClusterSpec("lab-cluster", True, HOSTS),),
        datastores=DATASTORES,
        first_moref=2,
    )
    lab.datacenters = [_build_datacenter(lab, spec) for spec in (first, SECOND_DATACENTER)]
    dc = lab.datacenter = lab.datacenters[0]
    # The first datacenter's objects under the names the lab always had (tests, the demo).
    lab.resource_pool = dc.clusters[0].pool
    lab.hosts = list(dc.hosts)
    lab.all_hosts = [h for d in lab.datacenters for h in d.hosts]
    lab.networks = list(dc.networks)
    for name, ds in dc.datastores.items():
        lab.datastores[name] = ds.path
        lab.datastore_kinds[name] = ds.kind
        lab.datastore_morefs[name] = ds.moref
    lab.team_folders = {
        name: lab.add(
            Folder(
                lab,
                f"group-v{30 + i}",
                name,
                dc.vm_folder,
                ("Folder", "VirtualMachine", "VirtualApp"),
            )
        )
        for i, name in enumerate(("teamA", "teamB"))
    }
    return lab


def _build_datacenter(lab: Lab, spec: DatacenterSpec) -> Datacenter:
    """One datacenter. Its objects are numbered from ``spec.first_moref`` (the first datacenter
    keeps the morefs the lab always gave it: datacenter-2, group-v3 ... datastore-20)."""
    n = spec.first_moref
    parent = lab.root_folder
    if spec.folder:
        for part in spec.folder.split("/"):
            found = next((c for c in parent.children() if c.name == part), None)
            parent = found or lab.add(
                Folder(lab, f"group-d{n - 1}", part, parent, ("Folder", "Datacenter"))
            )
    dc = lab.add(Datacenter(lab, f"datacenter-{n}", spec.name, parent))
    dc.vm_folder = lab.add(
        Folder(lab, f"group-v{n + 1}", "vm", dc, ("Folder", "VirtualMachine", "VirtualApp"))
    )
    dc.host_folder = lab.add(
        Folder(lab, f"group-h{n + 2}", "host", dc, ("Folder", "ComputeResource"))
    )
    dc.datastore_folder = lab.add(
        Folder(lab, f"group-s{n + 3}", "datastore", dc, ("Folder", "Datastore"))
    )
    dc.network_folder = lab.add(
        Folder(lab, f"group-n{n + 4}", "network", dc, ("Folder", "Network"))
    )
    host_index = n + 8
    for k, cspec in enumerate(spec.clusters):
        cluster_moref = f"domain-c{n + 5}" if k == 0 else lab.next_moref("domain-c")
        pool_moref = f"resgroup-{n + 6}" if k == 0 else lab.next_moref("resgroup")
        cluster = lab.add(Cluster(lab, cluster_moref, cspec.name, dc.host_folder, drs=cspec.drs))
        cluster.pool = lab.add(ResourcePool(lab, pool_moref, "Resources", cluster))
        for name in cspec.hosts:
            host = lab.add(HostSystem(lab, f"host-{host_index}", name, cluster))
            host_index += 1
            cluster.hosts.append(host)
            dc.hosts.append(host)
        dc.clusters.append(cluster)
    dc.networks.append(lab.add(Network(lab, f"network-{n + 7}", "VM Network", dc.network_folder)))
    # The first datacenter's datastores keep their place (root/datastores/<name>): the
    # demo, the benchmarks and SAN-mode users map them there.
    base = lab.root / ("datastores" if n == 2 else f"datastores-{dc.moref}")
    for i, (name, kind) in enumerate(spec.datastores.items()):
        path = base / name
        path.mkdir(parents=True, exist_ok=True)
        ds = lab.add(
            Datastore(lab, f"datastore-{n + 18 + i}", name, dc.datastore_folder, path, kind)
        )
        dc.datastores[name] = ds
    return dc
