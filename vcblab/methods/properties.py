"""PropertyCollector (retrieve with paging, filters, wait for updates) and ViewManager."""

from __future__ import annotations

import itertools
import time
import uuid as uuidlib

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
    """Value of a dotted property path ('summary.config.name'); None when unset.

    The value carries the type the property is declared with (an enum, a long, a typed
    array), because in a property set it travels as anyType and the client learns its type
    from xsi:type alone: vSphere sends ``xsi:type="HttpNfcLeaseState"`` for a lease's state,
    and a Go client's type assertion on a plain ``xsd:string`` fails.
    """
    head, *rest = path.split(".")
    declared = _prop_type(obj.vim_type, head)
    if declared is None:
        raise vmodl.query.InvalidProperty(
            msg=f"{obj.vim_type._wsdlName} has no property {head!r}", name=path
        )
    val = obj.get(head)
    for part in rest:
        if val is None:
            return None
        declared = _prop_type(type(val), part)
        try:
            val = getattr(val, part)
        except AttributeError:
            raise vmodl.query.InvalidProperty(
                msg=f"invalid property path {path!r}", name=path
            ) from None
    if isinstance(val, list) and not val:
        return None  # vSphere leaves empty arrays out of a property set
    return typed(val, declared)


_INTEGERS = (VmomiSupport.long, VmomiSupport.short, VmomiSupport.byte)


def typed(val, declared):
    """``val`` as an instance of its declared vmodl type where Python's own type would
    serialise as something else (str -> enum, int -> xsd:long, list -> ArrayOf...)."""
    if val is None or declared is None:
        return val
    if isinstance(val, list):
        if hasattr(type(val), "Item"):
            return val
        if issubclass(declared, list):
            return declared(val)
        return VmomiSupport.GetVmodlType("anyType[]")(val)
    if isinstance(val, VmomiSupport.DataObject | VmomiSupport.ManagedObject):
        return val
    if issubclass(declared, VmomiSupport.Enum) and isinstance(val, str):
        return val if isinstance(val, declared) else declared(val)
    if declared in _INTEGERS and type(val) is int:
        return declared(val)
    if declared is VmomiSupport.double and type(val) is float:
        return declared(val)
    return val


def _prop_type(cls, name: str):
    """The declared type of property ``name`` of a vmodl class (inherited ones included)."""
    for c in getattr(cls, "__mro__", ()):
        info = getattr(c, "_propInfo", {}).get(name)
        if info is not None:
            return info.type
    return None


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


# -- collectors, filters and updates ---------------------------------------------------------
#
# Filters belong to a property collector and are private to the session that made them:
# the default collector (ServiceContent.propertyCollector) has one set per session, and
# CreatePropertyCollector gives a session a collector of its own (govmomi's property.Wait
# makes one per wait and destroys it after), whose WaitForUpdates sees only its filters.

DEFAULT_COLLECTOR = "propertyCollector"


class CollectorState:
    """One session's view of one collector: its filters, and a pending CancelWaitForUpdates."""

    def __init__(self):
        self.filters: dict[str, PropertyFilter] = {}
        self.cancelled = False


class SessionCollector(LabObject):
    """A collector made by CreatePropertyCollector; usable only by the session that made it."""

    vim_type = vmodl.query.PropertyCollector

    def __init__(self, lab, moref, session):
        super().__init__(lab, moref)
        self.session = session

    def p_filter(self):
        state = self.session.collectors.get(self.moref)
        return [f.ref() for f in state.filters.values()] if state else None


def _own(call, obj) -> None:
    """Another session's collector, filter or view does not exist for this caller."""
    owner = getattr(obj, "session", None)
    if owner is not None and owner is not call.session:
        raise vmodl.fault.ManagedObjectNotFound(
            msg=f"The object '{obj.moref}' has already been deleted or has not been completely "
            "created",
            obj=obj.ref(),
        )


def _state(call, collector) -> CollectorState:
    _own(call, collector)
    state = call.session.collectors.get(collector.moref)
    if state is None:
        if collector.moref != DEFAULT_COLLECTOR:
            raise vmodl.fault.ManagedObjectNotFound(
                msg=f"The collector '{collector.moref}' has been destroyed", obj=collector.ref()
            )
        state = call.session.collectors[DEFAULT_COLLECTOR] = CollectorState()
    return state


@method("CreatePropertyCollector")
def create_property_collector(call, this):
    moref = f"session[{call.session.key[:8]}]{uuidlib.uuid4()}"
    collector = call.lab.add(SessionCollector(call.lab, moref, call.session))
    call.session.collectors[moref] = CollectorState()
    return collector.ref()


@method("DestroyPropertyCollector")
def destroy_property_collector(call, this):
    if this.moref == DEFAULT_COLLECTOR:
        raise vmodl.fault.NotSupported(msg="The session's default collector cannot be destroyed.")
    state = _state(call, this)
    for flt in list(state.filters.values()):
        call.lab.remove(flt.moref)
    state.cancelled = True  # a WaitForUpdates still running on it ends
    call.session.collectors.pop(this.moref, None)
    call.lab.remove(this.moref)


class PropertyFilter(LabObject):
    vim_type = PC.Filter

    def __init__(self, lab, moref, spec, session, collector: str, partial: bool):
        super().__init__(lab, moref)
        self.spec = spec
        self.session = session
        self.collector = collector
        self.partial = partial
        self.reported: dict[str, tuple] = {}  # moref -> (ref, {path: repr last sent})

    def p_spec(self):
        return self.spec

    def p_partialUpdates(self):
        return self.partial


@method("CreateFilter")
def create_filter(call, this, spec, partialUpdates):
    lab = call.lab
    state = _state(call, this)
    select_objects(lab, spec)  # a bad spec faults now, as vSphere does
    flt = PropertyFilter(
        lab,
        f"session[{call.session.key[:8]}]{uuidlib.uuid4()}",
        spec,
        call.session,
        this.moref,
        bool(partialUpdates),
    )
    lab.add(flt)
    state.filters[flt.moref] = flt
    return flt.ref()


@method("DestroyPropertyFilter")
def destroy_filter(call, this):
    _own(call, this)
    state = call.session.collectors.get(this.collector)
    if state is not None:
        state.filters.pop(this.moref, None)
    call.lab.remove(this.moref)


def _changes(lab, flt: PropertyFilter):
    """ObjectUpdates for what changed since this filter last reported; records the new state."""
    updates = []
    with lab.lock:
        current = {}
        for obj in select_objects(lab, flt.spec):
            current[obj.moref] = (obj, object_values(obj, flt.spec.propSet))
    for moref, (obj, values) in current.items():
        before = flt.reported.get(moref, (None, None))[1]
        shown = {k: repr(v) for k, v in values.items()}
        if before == shown:
            continue
        changes = [
            PC.Change(name=k, op="assign" if v is not None else "remove", val=v)
            for k, v in values.items()
            if before is None or before.get(k) != shown[k]
        ]
        if before is None:  # "enter" lists what is set; an unset property is simply absent
            changes = [c for c in changes if c.val is not None]
        updates.append(
            PC.ObjectUpdate(
                kind="enter" if before is None else "modify", obj=obj.ref(), changeSet=changes
            )
        )
        flt.reported[moref] = (obj.ref(), shown)
    for moref in set(flt.reported) - set(current):
        ref, _ = flt.reported.pop(moref)
        updates.append(PC.ObjectUpdate(kind="leave", obj=ref))
    return updates


def _wait(call, this, version, max_wait):
    session = call.session
    state = _state(call, this)
    state.cancelled = False
    if not version:  # a first call reports everything from scratch
        for flt in state.filters.values():
            flt.reported.clear()
    deadline = time.monotonic() + (MAX_WAIT if max_wait is None else max_wait)
    while True:
        filter_updates = []
        for flt in list(state.filters.values()):
            updates = _changes(call.lab, flt)
            if updates:
                filter_updates.append(PC.FilterUpdate(filter=flt.ref(), objectSet=updates))
        if filter_updates:
            new_version = str(int(version or 0) + 1)
            return PC.UpdateSet(version=new_version, filterSet=filter_updates)
        if state.cancelled:
            state.cancelled = False
            raise vmodl.fault.RequestCanceled(msg="The wait was cancelled.")
        if time.monotonic() >= deadline or session.logged_out:
            return None
        time.sleep(POLL)


@method("WaitForUpdatesEx")
def wait_for_updates_ex(call, this, version=None, options=None):
    max_wait = getattr(options, "maxWaitSeconds", None)
    return _wait(call, this, version, max_wait)


@method("WaitForUpdates")
def wait_for_updates(call, this, version=None):
    return _wait(call, this, version, None)


@method("CheckForUpdates")
def check_for_updates(call, this, version=None):
    return _wait(call, this, version, 0)


@method("CancelWaitForUpdates")
def cancel_wait_for_updates(call, this):
    _state(call, this).cancelled = True


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
