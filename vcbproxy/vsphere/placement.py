"""Where VMs are: the host running each and the datastores holding its files, in one
PropertyCollector round trip. For a fleet's per-host and
per-datastore limits, which must name objects as the server does (morefs), not as a user
spelled them (the server itself: ``Session.server_id``)."""

from __future__ import annotations

from dataclasses import dataclass

from pyVmomi import vim, vmodl

from vcbproxy.vsphere.collector import container_view, props_of, retrieve, view_spec
from vcbproxy.vsphere.faults import translated


@dataclass(frozen=True)
class Placement:
    vm: str  # moref
    host: str  # moref of the host running the VM ("" when the server does not say)
    host_name: str
    datastores: tuple[tuple[str, str], ...]  # (moref, name) of each datastore, sorted


def placements(session, morefs: list[str] | None = None) -> dict[str, Placement]:
    """{VM moref: Placement} of the VMs ``morefs`` (every VM when None)."""
    with translated("reading where the VMs are"):
        view = container_view(session, [vim.VirtualMachine, vim.HostSystem, vim.Datastore])
        try:
            prop_specs = [
                vmodl.query.PropertyCollector.PropertySpec(
                    type=vim.VirtualMachine, pathSet=["runtime.host", "datastore"]
                ),
                vmodl.query.PropertyCollector.PropertySpec(type=vim.HostSystem, pathSet=["name"]),
                vmodl.query.PropertyCollector.PropertySpec(type=vim.Datastore, pathSet=["name"]),
            ]
            contents = retrieve(session, [view_spec(view)], prop_specs)
        finally:
            view.DestroyView()
    names: dict[str, str] = {}
    vms: dict[str, dict] = {}
    for c in contents:
        props = props_of(c)
        if isinstance(c.obj, vim.VirtualMachine):
            vms[c.obj._moId] = props
        else:
            names[c.obj._moId] = str(props.get("name", ""))
    wanted = set(morefs) if morefs is not None else set(vms)
    out = {}
    for moref, props in vms.items():
        if moref not in wanted:
            continue
        host = props.get("runtime.host")
        host_id = host._moId if host is not None else ""
        stores = sorted(
            (ds._moId, names.get(ds._moId, ds._moId)) for ds in props.get("datastore") or []
        )
        out[moref] = Placement(
            vm=moref, host=host_id, host_name=names.get(host_id, ""), datastores=tuple(stores)
        )
    return out
