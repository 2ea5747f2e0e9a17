"""Datastore files through the FileManager (deleting what a restore uploaded, making folders).

The file service (``/folder``) can PUT and GET but not delete; vSphere deletes datastore
files with ``FileManager.DeleteDatastoreFile_Task``, in the datacenter holding the datastore
(vCenter needs it: a datastore name is unique only inside its datacenter). A file that is
not there becomes :class:`errors.NotFoundError`, so a caller cleaning up after a PUT that
never created its file can tell "already gone" from a real failure.
"""

from __future__ import annotations

from pyVmomi import vim

from vcbproxy import errors
from vcbproxy.models import DatastorePath
from vcbproxy.vsphere.datacenters import datacenter_object, datacenter_of_datastore
from vcbproxy.vsphere.faults import translated
from vcbproxy.vsphere.tasks import wait_for_task

DEFAULT_TIMEOUT = 600.0


def _not_found(exc: BaseException) -> bool:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return isinstance(cause, vim.fault.FileNotFound)


def _datacenter(session, path: DatastorePath, datacenter: str | None):
    return datacenter_object(
        session, datacenter_of_datastore(session, path.datastore, datacenter=datacenter)
    )


def delete_file(
    session,
    path: DatastorePath,
    *,
    datacenter: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Delete one file (or a folder and its content) on a datastore of ``datacenter`` (by
    default the only datacenter with a datastore of that name)."""
    what = f"deleting {path}"
    dc = _datacenter(session, path, datacenter)
    try:
        with translated(what, errors.StagingError):
            task = session.content.fileManager.DeleteDatastoreFile_Task(
                name=str(path), datacenter=dc
            )
        wait_for_task(session, task, timeout=timeout, what=what, error=errors.StagingError)
    except errors.VcbProxyError as exc:
        if _not_found(exc):
            raise errors.NotFoundError(f"{what}: no such file") from exc
        raise


def make_directory(
    session, path: DatastorePath, *, datacenter: str | None = None, parents: bool = True
) -> bool:
    """Create a folder on a datastore (of ``datacenter``); True if this call created it,
    False if it was there (so a caller knows whether the folder is its own to remove)."""
    what = f"creating folder {path}"
    dc = _datacenter(session, path, datacenter)
    try:
        with translated(what, errors.StagingError):
            session.content.fileManager.MakeDirectory(
                name=str(path), datacenter=dc, createParentDirectories=parents
            )
    except errors.StagingError as exc:
        if isinstance(exc.__cause__, vim.fault.FileAlreadyExists):
            return False
        raise
    return True
