"""HostDatastoreBrowser: SearchDatastore_Task and SearchDatastoreSubFolders_Task.

A search lists one folder (or a folder and everything under it) of a datastore. Files are
kept when they match a ``matchPattern`` (all files without one) and one of the ``query``
types (every file without a query); a query's type decides the FileInfo subclass, and
``details`` decide which of size, modification time and owner are filled. Virtual disks
are their descriptors: the extents and change-tracking files behind them are not disks.
The lab's own bookkeeping files (oracle journal, upload staging) are not datastore content
and never show.
"""

from __future__ import annotations

import datetime
import fnmatch
import os
from pathlib import Path

from pyVmomi import vim

from vcblab.fileservice import UPLOAD_SUFFIX
from vcblab.methods import method
from vcblab.tasks import start_task
from vcbproxy.vmdk import descriptor

B = vim.host.DatastoreBrowser
LAB_FILES = (".labjournal", ".labbase", UPLOAD_SUFFIX, ".tmp")
NOT_DISKS = ("-flat.vmdk", "-delta.vmdk", "-sesparse.vmdk", "-ctk.vmdk", "-rdm.vmdk", "-rdmp.vmdk")

# query type -> (does the entry match, FileInfo subclass)
_KINDS = [
    (B.FolderQuery, lambda name, is_dir: is_dir, B.FolderInfo),
    (B.VmDiskQuery, lambda name, is_dir: not is_dir and _is_disk(name), B.VmDiskInfo),
    (B.VmConfigQuery, lambda name, is_dir: not is_dir and name.endswith(".vmx"), B.VmConfigInfo),
    (
        B.TemplateVmConfigQuery,
        lambda name, is_dir: not is_dir and name.endswith(".vmtx"),
        B.TemplateVmConfigInfo,
    ),
    (
        B.VmLogQuery,
        lambda name, is_dir: not is_dir and name.startswith("vmware") and name.endswith(".log"),
        B.VmLogInfo,
    ),
    (B.VmNvramQuery, lambda name, is_dir: not is_dir and name.endswith(".nvram"), B.VmNvramInfo),
    (
        B.VmSnapshotQuery,
        lambda name, is_dir: not is_dir and name.endswith(".vmsn"),
        B.VmSnapshotInfo,
    ),
    (B.IsoImageQuery, lambda name, is_dir: not is_dir and name.endswith(".iso"), B.IsoImageInfo),
    (
        B.FloppyImageQuery,
        lambda name, is_dir: not is_dir and name.endswith((".flp", ".img")),
        B.FloppyImageInfo,
    ),
]


def _is_disk(name: str) -> bool:
    return name.endswith(".vmdk") and not name.endswith(NOT_DISKS)


def _info_class(spec, name: str, is_dir: bool):
    """The FileInfo subclass the entry is reported as, or None when no query matches it.

    Which entries match is the queries' business; whether a file comes back as its type
    (VmDiskInfo, VmConfigInfo ...) or as a plain FileInfo is ``details.fileType``'s.
    Folders are always FolderInfo: a client walking the tree needs to tell them apart.
    """
    queries = list(spec.query or []) if spec else []
    typed = bool(spec and spec.details and spec.details.fileType)
    kind = None
    if not queries:
        kind = next((cls for _q, test, cls in _KINDS if test(name, is_dir)), B.FileInfo)
    else:
        for query in queries:
            hit = next(
                (cls for qtype, test, cls in _KINDS if type(query) is qtype and test(name, is_dir)),
                None,
            )
            if hit is None and type(query) is B.Query:  # FileQuery: any file or folder
                hit = B.FolderInfo if is_dir else B.FileInfo
            if hit is not None:
                kind = hit
                break
    if kind is None:
        return None
    if is_dir:
        return B.FolderInfo
    return kind if typed else B.FileInfo


def _disk_details(info, path: Path, query) -> None:
    details = getattr(query, "details", None) if query is not None else None
    if details is None:
        return
    try:
        if path.stat().st_size > 64 << 10:
            return  # a sparse extent with an embedded descriptor: no text descriptor to read
        desc = descriptor.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return
    if details.capacityKb:
        info.capacityKb = desc.capacity // 1024
    if details.diskType:
        info.diskType = vim.vm.device.VirtualDisk.FlatVer2BackingInfo
    if details.hardwareVersion:
        info.hardwareVersion = int(desc.ddb.get("ddb.virtualHWVersion", "19") or 19)
    if details.diskExtents:
        info.diskExtents = [e.filename for e in desc.extents if e.filename]
    if details.thin:
        info.thin = desc.ddb.get("ddb.thinProvisioned", "0") == "1"


def _matches_pattern(spec, name: str) -> bool:
    patterns = list(spec.matchPattern or []) if spec else []
    if not patterns:
        return True
    if spec.searchCaseInsensitive:
        return any(fnmatch.fnmatch(name.lower(), p.lower()) for p in patterns)
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _entry(spec, directory: Path, name: str):
    path = directory / name
    try:
        st = path.stat()
    except OSError:
        return None
    is_dir = path.is_dir()
    cls = _info_class(spec, name, is_dir)
    if cls is None or not _matches_pattern(spec, name):
        return None
    info = cls(path=name)
    details = spec.details if spec else None
    if details is not None:
        if details.fileSize:
            info.fileSize = st.st_size
        if details.modification:
            info.modification = datetime.datetime.fromtimestamp(st.st_mtime, datetime.UTC)
        if details.fileOwner:
            info.owner = "root"
    if cls is B.VmDiskInfo:
        query = next((q for q in spec.query or [] if type(q) is B.VmDiskQuery), None)
        _disk_details(info, path, query)
    return info


def _listing(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if not n.endswith(LAB_FILES))


def _search(ds_ref, folder_path: str, directory: Path, spec):
    files = [e for n in _listing(directory) if (e := _entry(spec, directory, n)) is not None]
    if spec is not None and spec.sortFoldersFirst:
        files.sort(key=lambda f: not isinstance(f, B.FolderInfo))
    return B.SearchResults(datastore=ds_ref, folderPath=folder_path, file=files)


def _resolve(call, this, datastore_path: str):
    """(Datastore, host directory, normalised '[ds] dir') or the fault vSphere gives."""
    text = datastore_path or ""
    if not text.startswith("[") or "]" not in text:
        raise vim.fault.InvalidDatastorePath(
            msg=f"Invalid datastore path '{text}'.", datastorePath=text
        )
    name, rel = text[1:].split("]", 1)
    datastores = {d.name: d for d in this.datastores()}
    ds = datastores.get(name)
    if ds is None:
        raise vim.fault.InvalidDatastore(
            msg=f"The datastore '{name}' is not searched by this browser.", name=name
        )
    directory = ds.resolve(rel)
    if directory is None:
        raise vim.fault.InvalidDatastorePath(
            msg=f"Invalid datastore path '{text}'.", datastorePath=text
        )
    if not directory.is_dir():
        raise vim.fault.FileNotFound(msg=f"File {text} was not found", file=text)
    return ds, directory, f"[{name}] {rel.strip()}".rstrip()


def _join(folder: str, rel: str) -> str:
    if rel == ".":
        return folder
    return f"{folder} {rel}" if folder.endswith("]") else f"{folder.rstrip('/')}/{rel}"


def _entity(this, datastore_path: str):
    """The datastore a search is about (the task's entity), if the path names one."""
    name = (datastore_path or "")[1:].split("]", 1)[0]
    return next((d for d in this.datastores() if d.name == name), None)


@method("SearchDatastore_Task")
def search_datastore(call, this, datastorePath, searchSpec=None):
    def work(task):
        ds, directory, folder = _resolve(call, this, datastorePath)
        return _search(ds.ref(), folder, directory, searchSpec)

    return start_task(
        call,
        _entity(this, datastorePath),
        "SearchDatastore_Task",
        "HostDatastoreBrowser.search",
        work,
    )


@method("SearchDatastoreSubFolders_Task")
def search_sub_folders(call, this, datastorePath, searchSpec=None):
    def work(task):
        ds, directory, folder = _resolve(call, this, datastorePath)
        results = []
        for current, dirs, _files in os.walk(directory):
            dirs.sort()
            rel = Path(current).relative_to(directory).as_posix()
            results.append(_search(ds.ref(), _join(folder, rel), Path(current), searchSpec))
        return B.SearchResults.Array(results)

    return start_task(
        call,
        _entity(this, datastorePath),
        "SearchDatastoreSubFolders_Task",
        "HostDatastoreBrowser.searchSubFolders",
        work,
    )
