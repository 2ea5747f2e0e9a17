"""Datastores: their URLs, and files through the FileManager (deleting what a restore
uploaded, making folders).

The file service (``/folder``) can PUT and GET but not delete; vSphere deletes datastore
files with ``FileManager.DeleteDatastoreFile_Task`` (in the session's datacenter). A file
that is not there becomes :class:`errors.NotFoundError`, so a caller cleaning up after a
PUT that never created its file can tell "already gone" from a real failure.
"""

from __future__ import annotations

from pyVmomi import vim, vmodl

from vcbproxy import errors
from vcbproxy.models import DatastorePath
from vcbproxy.vsphere.collector import container_view, props_of, retrieve, view_spec
from vcbproxy.vsphere.faults import translated
from vcbproxy.vsphere.inventory import unescape_name
from vcbproxy.vsphere.register import find_datacenter
from vcbproxy.vsphere.tasks import wait_for_task

DEFAULT_TIMEOUT = 600.0


def datastore_urls(session) -> dict[str, str]:
    """``{name: url}`` of every datastore: ``ds:///vmfs/volumes/<uuid>/`` (``summary.url``),
    which names a datastore whatever it is called, so ``--san-map`` may use it."""
    view = container_view(session, [vim.Datastore])
    try:
        spec = vmodl.query.PropertyCollector.PropertySpec(
            type=vim.Datastore, pathSet=["name", "summary.url"]
        )
        with translated("listing datastores"):
            contents = retrieve(session, [view_spec(view)], [spec])
    finally:
        view.DestroyView()
    urls = {}
    for content in contents:
        props = props_of(content)
        if props.get("summary.url"):
            urls[unescape_name(props.get("name", ""))] = str(props["summary.url"])
    return urls


def _not_found(exc: BaseException) -> bool:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return isinstance(cause, vim.fault.FileNotFound)


def delete_file(session, path: DatastorePath, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Delete one file (or a folder and its content) on a datastore."""
    what = f"deleting {path}"
    dc = find_datacenter(session)
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


def make_directory(session, path: DatastorePath, *, parents: bool = True) -> bool:
    """Create a folder on a datastore; True if this call created it, False if it was there
    (so a caller knows whether the folder is its own to remove)."""
    what = f"creating folder {path}"
    dc = find_datacenter(session)
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
