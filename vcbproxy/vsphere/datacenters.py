"""Datacenters, and which datacenter holds which datastore.

A datastore's name is unique only inside its datacenter: two datacenters may each have a
``datastore1``. Everything that names a datastore on vCenter therefore names its datacenter
too: the file service's ``dcPath`` (govmomi derives it from the datastore's inventory path,
``object/datastore.go``), FileManager calls, RegisterVM (in the folder's datacenter).

``dcPath`` is the datacenter's inventory path below the root folder, without a leading slash
(``lab-dc``, ``emea/lab-dc2``), with names as the server stores them ('/' in a name is %2f):
what ``SearchIndex.FindByInventoryPath`` takes and what vCenter's own file URLs carry.

The inventory of datacenters and datastores is read once per session (one property
collector round trip) and kept: a backup run does not create datacenters.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from pyVmomi import vim, vmodl

from vcbproxy import errors
from vcbproxy.vsphere.collector import container_view, props_of, retrieve, view_spec
from vcbproxy.vsphere.faults import translated


@dataclass(frozen=True)
class DatastoreEntry:
    name: str  # as the server has it
    datacenter: str  # the inventory path of its datacenter ("emea/lab-dc2")
    moref: str
    url: str  # summary.url, "ds:///vmfs/volumes/<uuid>/"


@dataclass(frozen=True)
class Datacenters:
    """Every datacenter (path -> moref) and every datastore with its datacenter."""

    paths: dict[str, str]
    datastores: tuple[DatastoreEntry, ...]

    def holding(self, datastore: str) -> list[str]:
        """Paths of the datacenters that have a datastore called ``datastore``."""
        return sorted({d.datacenter for d in self.datastores if d.name == datastore})

    def in_datacenter(self, datacenter: str) -> list[DatastoreEntry]:
        return [d for d in self.datastores if d.datacenter == datacenter]


_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def normalise_path(path: str) -> str:
    """'/emea/lab-dc2/' -> 'emea/lab-dc2' (a path given with or without slashes)."""
    return "/".join(part for part in (path or "").split("/") if part)


def datacenters(session) -> Datacenters:
    """The session's datacenters and datastores, read on first use."""
    with _lock:
        known = _cache.get(session)
    if known is not None:
        return known
    found = _read(session)
    with _lock:
        _cache[session] = found
    return found


def _read(session) -> Datacenters:
    types = [vim.Folder, vim.Datacenter, vim.Datastore]
    view = container_view(session, types)
    try:
        specs = [
            vmodl.query.PropertyCollector.PropertySpec(type=t, pathSet=["name", "parent"])
            for t in (vim.Folder, vim.Datacenter)
        ]
        specs.append(
            vmodl.query.PropertyCollector.PropertySpec(
                type=vim.Datastore, pathSet=["name", "parent", "summary.url"]
            )
        )
        with translated("listing datacenters and datastores"):
            contents = retrieve(session, [view_spec(view)], specs)
    finally:
        view.DestroyView()
    nodes = {(c.obj._wsdlName, c.obj._moId): (c.obj, props_of(c)) for c in contents}

    def datacenter_of(obj) -> str | None:
        """Path of the datacenter above ``obj`` (itself for a datacenter)."""
        seen = set()
        while obj is not None and (obj._wsdlName, obj._moId) in nodes:
            key = (obj._wsdlName, obj._moId)
            if key in seen:
                return None
            seen.add(key)
            if isinstance(obj, vim.Datacenter):
                return _path(obj)
            obj = nodes[key][1].get("parent")
        return None

    def _path(obj) -> str:
        parts = []
        # The root folder is not in the view (a view holds what is below its container) and
        # is never named in an inventory path.
        while obj is not None and (obj._wsdlName, obj._moId) in nodes:
            _, props = nodes[(obj._wsdlName, obj._moId)]
            parts.append(props.get("name", ""))
            obj = props.get("parent")
        return "/".join(reversed(parts))

    paths = {}
    entries = []
    for obj, props in nodes.values():
        if isinstance(obj, vim.Datacenter):
            paths[_path(obj)] = obj._moId
        elif isinstance(obj, vim.Datastore):
            dc = datacenter_of(props.get("parent"))
            if dc is not None:
                entries.append(
                    DatastoreEntry(
                        name=props.get("name", ""),
                        datacenter=dc,
                        moref=obj._moId,
                        url=str(props.get("summary.url") or ""),
                    )
                )
    return Datacenters(paths, tuple(sorted(entries, key=lambda e: (e.datacenter, e.name))))


def datacenter_of_datastore(session, datastore: str, *, datacenter: str | None = None) -> str:
    """The path of the datacenter holding ``datastore``.

    ``datacenter`` (a path, with or without slashes) says where to look when the name is in
    several datacenters; without it the name must be unique, else the error lists them.
    """
    known = datacenters(session)
    holding = known.holding(datastore)
    if datacenter is not None:
        wanted = normalise_path(datacenter)
        if wanted not in known.paths:
            raise errors.NotFoundError(
                f"no datacenter at inventory path {wanted!r}; there are: "
                + ", ".join(sorted(known.paths))
            )
        if wanted not in holding:
            raise errors.NotFoundError(f"datacenter {wanted} has no datastore {datastore!r}")
        return wanted
    if not holding:
        raise errors.NotFoundError(f"no datastore named {datastore!r} in any datacenter")
    if len(holding) > 1:
        raise errors.AmbiguousError(
            f"datastore {datastore!r} exists in datacenters {', '.join(holding)}; "
            f"name the datacenter (--datacenter)"
        )
    return holding[0]


def datacenter_object(session, path: str):
    """The pyVmomi Datacenter at inventory path ``path``."""
    known = datacenters(session)
    moref = known.paths.get(normalise_path(path))
    if moref is None:
        raise errors.NotFoundError(
            f"no datacenter at inventory path {path!r}; there are: "
            + ", ".join(sorted(known.paths))
        )
    return vim.Datacenter(moref, session.stub)


def datastore_urls(session, datacenter: str | None = None) -> dict[str, str]:
    """``{name: url}`` of the datastores of ``datacenter`` (all, when None: then a name in
    two datacenters is refused, as it would map two datastores to one directory)."""
    known = datacenters(session)
    entries = (
        known.in_datacenter(normalise_path(datacenter))
        if datacenter is not None
        else list(known.datastores)
    )
    urls: dict[str, str] = {}
    for entry in entries:
        if not entry.url:
            continue
        if entry.name in urls and urls[entry.name] != entry.url:
            raise errors.AmbiguousError(
                f"datastore {entry.name!r} exists in datacenters "
                f"{', '.join(known.holding(entry.name))}; map it by URL in one datacenter"
            )
        urls[entry.name] = entry.url
    return urls
