"""Registering a restored VM, and the small inventory look-ups a restore needs."""

from __future__ import annotations

import posixpath

from pyVmomi import vim

from vcbproxy import errors
from vcbproxy.models import DatastorePath, VmRef
from vcbproxy.vsphere.collector import object_props
from vcbproxy.vsphere.faults import translated
from vcbproxy.vsphere.inventory import get_vm
from vcbproxy.vsphere.tasks import wait_for_task

DEFAULT_TIMEOUT = 600.0


def _by_path(session, path: str, cls, what: str):
    with translated(f"looking up {what} {path}"):
        obj = session.content.searchIndex.FindByInventoryPath(inventoryPath=path.strip("/"))
    if obj is None or not isinstance(obj, cls):
        raise errors.NotFoundError(f"no {what} at inventory path {path}")
    return obj


def find_folder(session, path: str):
    return _by_path(session, path, vim.Folder, "VM folder")


def find_pool(session, path: str):
    return _by_path(session, path, vim.ResourcePool, "resource pool")


def find_host(session, path: str):
    return _by_path(session, path, vim.HostSystem, "host")


def find_datacenter(session, path: str):
    """The datacenter at inventory path ``path`` as a managed object."""
    return _by_path(session, path, vim.Datacenter, "datacenter")


def _defaults(session, datacenter: str):
    """The datacenter's VM folder and its first compute resource's root pool."""
    dc = find_datacenter(session, datacenter)
    with translated("reading the datacenter"):
        folder = dc.vmFolder
        pool = None
        for entity in dc.hostFolder.childEntity or []:
            if isinstance(entity, vim.ComputeResource):
                pool = entity.resourcePool
                break
    if pool is None:
        raise errors.NotFoundError(
            f"datacenter {datacenter} has no compute resource to register into"
        )
    return folder, pool


def register_vm(
    session,
    vmx_path: DatastorePath,
    *,
    name: str,
    datacenter: str,
    folder: str | None = None,
    pool: str | None = None,
    host: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> VmRef:
    """Register ``vmx_path`` (a datastore path in ``datacenter``, an inventory path)."""
    default_folder, default_pool = _defaults(session, datacenter)
    folder_obj = find_folder(session, folder) if folder else default_folder
    pool_obj = find_pool(session, pool) if pool else default_pool
    host_obj = find_host(session, host) if host else None
    what = f"registering {vmx_path} as {name!r}"
    with translated(what):
        task = folder_obj.RegisterVM_Task(
            path=str(vmx_path), name=name, asTemplate=False, pool=pool_obj, host=host_obj
        )
    vm = wait_for_task(session, task, timeout=timeout, what=what)
    ref = get_vm(session, vm._moId)
    if ref is None:
        raise errors.NotFoundError(f"{what}: the new VM {vm._moId} is not in the inventory")
    return ref


def destroy_vm(session, moref: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    what = f"destroying VM {moref}"
    with translated(what):
        task = vim.VirtualMachine(moref, session.stub).Destroy_Task()
    wait_for_task(session, task, timeout=timeout, what=what)


def power_on(session, moref: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    what = f"powering on VM {moref}"
    with translated(what):
        task = vim.VirtualMachine(moref, session.stub).PowerOnVM_Task()
    wait_for_task(session, task, timeout=timeout, what=what)


def unregister_vm(session, moref: str) -> None:
    """Remove a VM from the inventory and keep its files (``UnregisterVM``), so an overwrite
    can put it back should the replacement fail to register."""
    with translated(f"unregistering VM {moref}"):
        vim.VirtualMachine(moref, session.stub).UnregisterVM()


def vm_files(session, moref: str) -> list[DatastorePath]:
    """Every file of a VM as ``layoutEx`` lists it (config, logs, disks, snapshots); names
    given without a folder (vcsim does this) are taken as in the ``.vmx``'s folder."""

    with translated(f"listing the files of VM {moref}"):
        props = object_props(
            session,
            vim.VirtualMachine(moref, session.stub),
            ["layoutEx.file", "config.files.vmPathName"],
        )
    vmx = props.get("config.files.vmPathName") or ""
    vm_dir = posixpath.dirname(DatastorePath.parse(vmx).path) if vmx else ""
    out: list[DatastorePath] = []
    for f in props.get("layoutEx.file") or []:
        try:
            loc = DatastorePath.parse(f.name)
        except ValueError:
            continue
        if "/" not in loc.path and vm_dir:
            loc = DatastorePath(loc.datastore, f"{vm_dir}/{loc.path}")
        if loc not in out:
            out.append(loc)
    return out
