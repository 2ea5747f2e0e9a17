"""FileManager and VirtualDiskManager: datastore files a restore creates or cleans up."""

from __future__ import annotations

import shutil

from pyVmomi import vim, vmodl

from vcblab.methods import method
from vcblab.model import AmbiguousDatastore
from vcblab.tasks import start_task


def _path(call, name: str, datacenter=None):
    """The host path of a datastore path, in ``datacenter`` (vCenter needs it to tell apart
    datastores of the same name in two datacenters, and faults without it then)."""
    lab = call.lab
    dc = lab.obj(datacenter._moId) if datacenter is not None else None
    if datacenter is not None and dc is None:
        raise vmodl.fault.ManagedObjectNotFound(
            msg=f"The object '{datacenter._moId}' has already been deleted or has not been "
            "completely created",
            obj=datacenter,
        )
    try:
        path = lab.datastore_path(name or "", dc)
    except AmbiguousDatastore as exc:
        raise vmodl.fault.InvalidArgument(
            msg=f"A specified parameter was not correct: datacenter ({exc})",
            invalidProperty="datacenter",
        ) from None
    if path is None:
        raise vim.fault.InvalidDatastorePath(
            msg=f"Invalid datastore path '{name}'.", datastorePath=name or ""
        )
    return path


@method("DeleteDatastoreFile_Task")
def delete_datastore_file(call, this, name, datacenter=None):
    def work(task):
        path = _path(call, name, datacenter)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            raise vim.fault.FileNotFound(msg=f"File {name} was not found", file=name)

    return start_task(call, None, "DeleteDatastoreFile_Task", "FileManager.deleteFile", work)


@method("MakeDirectory")
def make_directory(call, this, name, datacenter=None, createParentDirectories=False):
    path = _path(call, name, datacenter)
    if path.exists():
        raise vim.fault.FileAlreadyExists(
            msg=f"Cannot complete the operation because the file or folder {name} already exists",
            file=name,
        )
    if not path.parent.exists() and not createParentDirectories:
        raise vim.fault.FileNotFound(msg=f"File {name} was not found", file=name)
    path.mkdir(parents=True)


@method("DeleteVirtualDisk_Task")
def delete_virtual_disk(call, this, name, datacenter=None):
    """The descriptor and the files named after it (extent, delta, ctk)."""

    def work(task):
        path = _path(call, name, datacenter)
        if not path.is_file():
            raise vim.fault.FileNotFound(msg=f"File {name} was not found", file=name)
        stem = path.name.removesuffix(".vmdk")
        for suffix in ("-flat.vmdk", "-delta.vmdk", "-sesparse.vmdk", "-ctk.vmdk"):
            (path.parent / f"{stem}{suffix}").unlink(missing_ok=True)
        path.unlink()

    return start_task(
        call, None, "DeleteVirtualDisk_Task", "VirtualDiskManager.deleteVirtualDisk", work
    )
