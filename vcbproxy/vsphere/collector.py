"""PropertyCollector helpers: fetch many properties of many objects in one round trip, paged."""

from __future__ import annotations

from pyVmomi import vmodl

PAGE = 500


def retrieve(session, object_specs, prop_specs) -> list:
    """RetrievePropertiesEx with paging (ContinueRetrievePropertiesEx) -> ObjectContent list."""
    pc = session.content.propertyCollector
    spec = vmodl.query.PropertyCollector.FilterSpec(objectSet=object_specs, propSet=prop_specs)
    options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=PAGE)
    result = pc.RetrievePropertiesEx(specSet=[spec], options=options)
    out: list = []
    while result is not None:
        out.extend(result.objects or [])
        if not result.token:
            break
        result = pc.ContinueRetrievePropertiesEx(token=result.token)
    return out


def props_of(content) -> dict:
    """ObjectContent -> {property path: value}; missing (unset) properties are just absent."""
    return {p.name: p.val for p in content.propSet or []}


def object_props(session, obj, paths: list[str]) -> dict:
    """Some properties of one object, in one call."""
    obj_spec = vmodl.query.PropertyCollector.ObjectSpec(obj=obj, skip=False)
    prop_spec = vmodl.query.PropertyCollector.PropertySpec(type=type(obj), pathSet=paths)
    found = retrieve(session, [obj_spec], [prop_spec])
    return props_of(found[0]) if found else {}


def container_view(session, types: list, root=None):
    """A recursive ContainerView; the caller destroys it (``view.DestroyView()``)."""
    return session.content.viewManager.CreateContainerView(
        container=root or session.content.rootFolder, type=types, recursive=True
    )


def view_spec(view):
    """The ObjectSpec selecting every object a ContainerView holds (not the view itself)."""
    traverse = vmodl.query.PropertyCollector.TraversalSpec(
        name="view", path="view", skip=False, type=type(view)
    )
    return vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traverse])
