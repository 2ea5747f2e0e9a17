"""The lab's inventory objects (folders, datacenter, hosts, datastores, pools, the service
singletons) and build_lab(), which lays out the default inventory under a root directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pyVmomi import VmomiSupport, vim

from vcblab.model import Lab, LabObject
from vcblab.vmx import escape_name

DATASTORES = ("datastore1", "datastore2")
HOSTS = ("esx01.lab.local", "esx02.lab.local")


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

    def p_vmFolder(self):
        return self.vm_folder.ref()

    def p_hostFolder(self):
        return self.host_folder.ref()

    def p_datastoreFolder(self):
        return self.datastore_folder.ref()

    def p_networkFolder(self):
        return self.network_folder.ref()

    def p_datastore(self):
        return refs(self.lab.objects[m] for m in self.lab.datastore_morefs.values())

    def p_network(self):
        return vim.Network.Array()


class Datastore(Entity):
    vim_type = vim.Datastore

    def __init__(self, lab, moref, name, parent, path: Path):
        super().__init__(lab, moref, name, parent)
        self.path = path

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
            type="VMFS",
        )

    @property
    def url(self) -> str:
        return f"ds:///vmfs/volumes/{self.moref}/"

    def p_info(self):
        total, free = self._space()
        return vim.host.VmfsDatastoreInfo(
            name=self.name,
            url=self.url,
            freeSpace=free,
            maxFileSize=62 << 40,
            maxVirtualDiskCapacity=62 << 40,
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
            for h in self.lab.hosts
        ]

    def p_vm(self):
        return refs(
            (vm for vm in self.lab.vms() if self.name in vm.datastore_names()),
            vim.VirtualMachine.Array,
        )


class HostSystem(Entity):
    vim_type = vim.HostSystem

    def p_runtime(self):
        return vim.host.RuntimeInfo(
            connectionState="connected", powerState="poweredOn", inMaintenanceMode=False
        )

    def p_summary(self):
        return vim.host.Summary(
            host=self.ref(),
            runtime=self.p_runtime(),
            config=vim.host.Summary.ConfigSummary(
                name=self.name, port=443, vmotionEnabled=True, faultToleranceEnabled=False
            ),
            rebootRequired=False,
            overallStatus="green",
            managementServerIp="127.0.0.1",
        )

    def p_vm(self):
        return refs((vm for vm in self.lab.vms() if vm.host is self), vim.VirtualMachine.Array)

    def p_datastore(self):
        return refs(
            (self.lab.objects[m] for m in self.lab.datastore_morefs.values()), vim.Datastore.Array
        )


class Cluster(Entity):
    vim_type = vim.ClusterComputeResource

    def p_host(self):
        return refs(self.lab.hosts, vim.HostSystem.Array)

    def p_resourcePool(self):
        return self.lab.resource_pool.ref()

    def p_datastore(self):
        return refs(
            (self.lab.objects[m] for m in self.lab.datastore_morefs.values()), vim.Datastore.Array
        )


class ResourcePool(Entity):
    vim_type = vim.ResourcePool

    def p_owner(self):
        return self.parent.ref()

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
            about=about(),
            sessionManager=s["sessionManager"].ref(),
            searchIndex=s["searchIndex"].ref(),
            taskManager=s["taskManager"].ref(),
            fileManager=s["fileManager"].ref(),
            virtualDiskManager=s["virtualDiskManager"].ref(),
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
}


def build_lab(root: Path, *, seed: int = 0, password: str | None = None) -> Lab:
    """The empty inventory: datacenter, folders, two hosts in a cluster, a pool, datastores."""
    root = Path(root)
    lab = Lab(root, password=password, seed=seed)
    lab.service_instance = lab.add(ServiceInstance(lab, "ServiceInstance"))
    lab.singletons = {
        key: lab.add((SessionManager if key == "sessionManager" else Singleton)(lab, moref, t))
        for key, (moref, t) in _SINGLETONS.items()
    }
    lab.root_folder = lab.add(
        Folder(lab, "group-d1", "Datacenters", child_type=("Folder", "Datacenter"))
    )
    dc = lab.datacenter = lab.add(
        Datacenter(lab, "datacenter-2", lab.datacenter_name, lab.root_folder)
    )
    dc.vm_folder = lab.add(
        Folder(lab, "group-v3", "vm", dc, ("Folder", "VirtualMachine", "VirtualApp"))
    )
    dc.host_folder = lab.add(Folder(lab, "group-h4", "host", dc, ("Folder", "ComputeResource")))
    dc.datastore_folder = lab.add(Folder(lab, "group-s5", "datastore", dc, ("Folder", "Datastore")))
    dc.network_folder = lab.add(Folder(lab, "group-n6", "network", dc, ("Folder", "Network")))
    cluster = lab.add(Cluster(lab, "domain-c7", "lab-cluster", dc.host_folder))
    lab.resource_pool = lab.add(ResourcePool(lab, "resgroup-8", "Resources", cluster))
    lab.hosts = [
        lab.add(HostSystem(lab, f"host-{10 + i}", name, cluster)) for i, name in enumerate(HOSTS)
    ]
    lab.datastore_morefs = {}
    for i, name in enumerate(DATASTORES):
        path = root / "datastores" / name
        path.mkdir(parents=True, exist_ok=True)
        lab.datastores[name] = path
        ds = lab.add(Datastore(lab, f"datastore-{20 + i}", name, dc.datastore_folder, path))
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
