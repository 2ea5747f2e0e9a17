"""PropertyCollector (retrieve with paging, filters, wait for updates) and ViewManager."""

from __future__ import annotations

import itertools
import time

from pyVmomi import VmomiSupport, vim, vmodl

from vcblab.inventory import Entity
from vcblab.methods import method
from vcblab.model import LabObject

PC = vmodl.query.PropertyCollector
_ids = itertools.count(1)
MAX_WAIT = 60.0  # cap of a WaitForUpdates(Ex) that asked to wait forever
POLL = 0.05


# -- reading properties ------------------------------------------------------------------


def read_path(obj: LabObject, path: str):
    """Value of a dotted property path ('summary.config.name'); None when unset."""
    head, *rest = path.split(".")
    if not _has_property(obj.vim_type, head):
        raise vmodl.query.InvalidProperty(
            msg=f"{obj.vim_type._wsdlName} has no property {head!r}", name=path
        )
    val = obj.get(head)
    for part in rest:
        if val is None:
            return None
        try:
            val = getattr(val, part)
        except AttributeError:
            raise vmodl.query.InvalidProperty(
                msg=f"invalid property path {path!r}", name=path
            ) from None
    if isinstance(val, list):
        if not val:
            return None  # vSphere leaves empty arrays out of a property set
        if not hasattr(type(val), "Item"):  # a plain list cannot be serialised as anyType
            val = _declared_type(obj.vim_type, path)(val)
    return val


def _declared_type(vim_type, path: str):
    """The vmodl type a property path is declared with (an array type for lists)."""
    t = vim_type
    for part in path.split("."):
        t = getattr(t, "Item", t)
        info = next(
            (
                getattr(c, "_propInfo", {})[part]
                for c in t.__mro__
                if part in getattr(c, "_propInfo", {})
            ),
            None,
        )
        if info is None:
            return VmomiSupport.GetVmodlType("anyType[]")
        t = info.type
    return t


def _has_property(vim_type, name: str) -> bool:
    return any(name in getattr(cls, "_propInfo", {}) for cls in vim_type.__mro__)


def _as_list(val) -> list:
    if val is None:
        return []
    return list(val) if isinstance(val, list) else [val]


def _names(spec) -> dict:
    """Every named TraversalSpec reachable in a filter spec, for SelectionSpec references."""
    named = {}

    def visit(selects):
        for sel in selects or []:
            if isinstance(sel, PC.TraversalSpec):
                if sel.name and sel.name not in named:
                    named[sel.name] = sel
                    visit(sel.selectSet)
                elif not sel.name:
                    visit(sel.selectSet)

    for os in spec.objectSet or []:
        visit(os.selectSet)
    return named


def select_objects(lab, spec) -> list[LabObject]:
    """The objects a filter spec names: each objectSet start plus what its traversals reach."""
    named = _names(spec)
    found: dict[str, LabObject] = {}
    seen: set = set()

    def walk(obj, skip, selects):
        if not skip:
            found.setdefault(obj.moref, obj)
        for sel in selects or []:
            ts = sel if isinstance(sel, PC.TraversalSpec) else named.get(sel.name)
            if ts is None or not issubclass(obj.vim_type, ts.type):
                continue
            if (obj.moref, id(ts)) in seen:
                continue
            seen.add((obj.moref, id(ts)))
            for ref in _as_list(read_path(obj, ts.path)):
                child = lab.obj(getattr(ref, "_moId", None))
                if child is not None:
                    walk(child, ts.skip, ts.selectSet)

    for os in spec.objectSet or []:
        start = lab.obj(os.obj._moId)
        if start is None:
            raise vmodl.fault.ManagedObjectNotFound(msg=f"no object {os.obj._moId}", obj=os.obj)
        walk(start, os.skip, os.selectSet)
    return list(found.values())


def object_values(obj: LabObject, prop_specs) -> dict:
    paths: list[str] = []
    for ps in prop_specs or []:
        if not issubclass(obj.vim_type, ps.type):
            continue
        names = obj.property_names() if ps.all else list(ps.pathSet or [])
        paths += [n for n in names if n not in paths]
    return {path: read_path(obj, path) for path in paths}


def contents(lab, specs) -> list:
    out = []
    with lab.lock:
        for spec in specs:
            for obj in select_objects(lab, spec):
                values = object_values(obj, spec.propSet)
                out.append(
                    PC.ObjectContent(
                        obj=obj.ref(),
                        propSet=[
                            vmodl.DynamicProperty(name=k, val=v)
                            for k, v in values.items()
                            if v is not None
                        ],
                    )
                )
    return out


@method("Fetch")
def fetch(call, this, prop):
    """pyVmomi's single-property accessor (`vm.config` etc.)."""
    with call.lab.lock:
        return read_path(this, prop)


# -- retrieve --------------------------------------------------------------------------------


@method("RetrievePropertiesEx")
def retrieve_properties_ex(call, this, specSet, options=None):
    objects = contents(call.lab, specSet)
    limit = getattr(options, "maxObjects", None) or 0
    return _page(call, objects, limit)


def _page(call, objects, limit):
    if not objects:
        return None
    token = None
    if limit and len(objects) > limit:
        token = f"token-{next(_ids)}"
        call.session.retrievals[token] = (objects[limit:], limit)
        objects = objects[:limit]
    return PC.RetrieveResult(token=token, objects=objects)


@method("ContinueRetrievePropertiesEx")
def continue_retrieve(call, this, token):
    entry = call.session.retrievals.pop(token, None)
    if entry is None:
        raise vmodl.fault.InvalidArgument(
            msg=f"unknown or finished token {token!r}", invalidProperty="token"
        )
    rest, limit = entry
    return _page(call, rest, limit)


@method("CancelRetrievePropertiesEx")
def cancel_retrieve(call, this, token):
    call.session.retrievals.pop(token, None)


@method("RetrieveContents", "RetrieveProperties")
def retrieve_contents(call, this, specSet):
    return contents(call.lab, specSet)


# -- filters and updates ---------------------------------------------------------------------


class PropertyFilter(LabObject):
    vim_type = PC.Filter

    def __init__(self, lab, moref, spec, session):
        super().__init__(lab, moref)
        self.spec = spec
        self.session = session
        self.reported: dict[str, dict[str, str]] = {}  # moref -> path -> repr last sent

    def p_spec(self):
        return self.spec


@method("CreateFilter")
def create_filter(call, this, spec, partialUpdates):
    lab = call.lab
    flt = PropertyFilter(
        lab, f"session[{call.session.key[:8]}]filter-{next(_ids)}", spec, call.session
    )
    select_objects(lab, spec)  # a bad spec faults now, as vSphere does
    lab.add(flt)
    call.session.filters[flt.moref] = flt
    return flt.ref()


@method("DestroyPropertyFilter")
def destroy_filter(call, this):
    call.session.filters.pop(this.moref, None)
    call.lab.remove(this.moref)


def _changes(lab, flt: PropertyFilter):
    """ObjectUpdates for what changed since this filter last reported; records the new state."""
    updates = []
    with lab.lock:
        current = {}
        for obj in select_objects(lab, flt.spec):
            current[obj.moref] = (obj, object_values(obj, flt.spec.propSet))
    for moref, (obj, values) in current.items():
        before = flt.reported.get(moref)
        shown = {k: repr(v) for k, v in values.items()}
        if before == shown:
            continue
        changes = [
            PC.Change(name=k, op="assign" if v is not None else "remove", val=v)
            for k, v in values.items()
            if before is None or before.get(k) != shown[k]
        ]
        updates.append(
            PC.ObjectUpdate(
                kind="enter" if before is None else "modify", obj=obj.ref(), changeSet=changes
            )
        )
        flt.reported[moref] = shown
    for moref in set(flt.reported) - set(current):
        del flt.reported[moref]
        updates.append(PC.ObjectUpdate(kind="leave", obj=VmomiSupport.ManagedObject(moref)))
    return updates


def _wait(call, version, max_wait):
    session = call.session
    if not version:  # a first call reports everything from scratch
        for flt in session.filters.values():
            flt.reported.clear()
    deadline = time.monotonic() + (MAX_WAIT if max_wait is None else max_wait)
    while True:
        filter_updates = []
        for flt in list(session.filters.values()):
            updates = _changes(call.lab, flt)
            if updates:
                filter_updates.append(PC.FilterUpdate(filter=flt.ref(), objectSet=updates))
        if filter_updates:
            new_version = str(int(version or 0) + 1)
            return vmodl.query.PropertyCollector.UpdateSet(
                version=new_version, filterSet=filter_updates
            )
        if time.monotonic() >= deadline or session.logged_out:
            return None
        time.sleep(POLL)


@method("WaitForUpdatesEx")
def wait_for_updates_ex(call, this, version=None, options=None):
    max_wait = getattr(options, "maxWaitSeconds", None)
    return _wait(call, version, max_wait)


@method("WaitForUpdates")
def wait_for_updates(call, this, version=None):
    return _wait(call, version, None)


@method("CheckForUpdates")
def check_for_updates(call, this, version=None):
    return _wait(call, version, 0)


# -- views -----------------------------------------------------------------------------------


class ContainerView(LabObject):
    vim_type = vim.view.ContainerView

    def __init__(self, lab, moref, container, types, recursive):
        super().__init__(lab, moref)
        self.container, self.types, self.recursive = container, types, recursive

    def _members(self, entity):
        for child in entity.children():
            yield child
            if self.recursive:
                yield from self._members(child)

    def p_view(self):
        members = [
            m
            for m in self._members(self.container)
            if not self.types or any(issubclass(m.vim_type, t) for t in self.types)
        ]
        return vim.ManagedObject.Array([m.ref() for m in members])

    def p_container(self):
        return self.container.ref()

    def p_type(self):
        return VmomiSupport.GetVmodlType("string[]")([t._wsdlName for t in self.types]) or None

    def p_recursive(self):
        return self.recursive


@method("CreateContainerView")
def create_container_view(call, this, container, type=None, recursive=False):
    root = call.lab.obj(container._moId)
    if not isinstance(root, Entity):
        raise vmodl.fault.ManagedObjectNotFound(
            msg=f"no container {container._moId}", obj=container
        )
    view = ContainerView(
        call.lab,
        f"session[{call.session.key[:8]}]view-{next(_ids)}",
        root,
        list(type or []),
        bool(recursive),
    )
    call.lab.add(view)
    return view.ref()


@method("DestroyView")
def destroy_view(call, this):
    call.lab.remove(this.moref)
