"""Finding VMs: one paged PropertyCollector round trip over a ContainerView, then selectors
applied client-side. Returns :class:`~vcbproxy.models.VmRef`, never pyVmomi objects."""

from __future__ import annotations

import ipaddress
import re
import socket

from pyVmomi import vim, vmodl

from vcbproxy import errors
from vcbproxy.models import VmRef
from vcbproxy.selectors import POWER_STATES, Selector, normalise_uuid
from vcbproxy.vsphere.collector import container_view, props_of, retrieve, view_spec
from vcbproxy.vsphere.faults import translated

VM_PROPS = [
    "name",
    "config.uuid",
    "config.instanceUuid",
    "guest.ipAddress",
    "guest.net",
    "runtime.powerState",
    "runtime.host",
    "resourcePool",
    "parent",
    "config.files.vmPathName",
    "guest.toolsRunningStatus",
]
# Everything a VM's paths are built from: names and parents of the containers above it.
CONTAINER_TYPES = [
    vim.Folder,
    vim.Datacenter,
    vim.ComputeResource,
    vim.ResourcePool,
    vim.HostSystem,
]

_ESCAPE = re.compile(r"%(2[fF]|25|5[cC])")
_UNESCAPE = {"2f": "/", "25": "%", "5c": "\\"}


def unescape_name(name: str) -> str:
    """vSphere stores '/' as %2f, '\\' as %5c and '%' as %25 in inventory names; show them plain."""
    return _ESCAPE.sub(lambda m: _UNESCAPE[m.group(1).lower()], name or "")


def _key(obj) -> tuple[str, str]:
    return (obj._wsdlName, obj._moId)


class _Inventory:
    """Names and parents of everything, plus the VM properties: paths without extra calls."""

    def __init__(self, session):
        view = container_view(session, [vim.VirtualMachine, *CONTAINER_TYPES])
        try:
            prop_specs = [
                vmodl.query.PropertyCollector.PropertySpec(
                    type=vim.VirtualMachine, pathSet=VM_PROPS
                )
            ]
            prop_specs += [
                vmodl.query.PropertyCollector.PropertySpec(type=t, pathSet=["name", "parent"])
                for t in CONTAINER_TYPES
            ]
            contents = retrieve(session, [view_spec(view)], prop_specs)
        finally:
            view.DestroyView()
        self.nodes: dict[tuple[str, str], tuple[object, dict]] = {}
        self.vms: list[tuple[object, dict]] = []
        for c in contents:
            props = props_of(c)
            self.nodes[_key(c.obj)] = (c.obj, props)
            if isinstance(c.obj, vim.VirtualMachine):
                self.vms.append((c.obj, props))

    def name(self, obj) -> str:
        node = self.nodes.get(_key(obj)) if obj is not None else None
        return unescape_name(node[1].get("name", "")) if node else ""

    def path(self, obj) -> str:
        """'/DC0/vm/folder' — names from the top (below the root folder) down to ``obj``."""
        parts = []
        seen = set()
        while obj is not None and _key(obj) in self.nodes and _key(obj) not in seen:
            seen.add(_key(obj))
            node_obj, props = self.nodes[_key(obj)]
            parts.append(unescape_name(props.get("name", "")))
            obj = props.get("parent")
        return "/" + "/".join(reversed(parts))

    def datacenter_of(self, obj) -> str:
        """The inventory path of the datacenter above ``obj`` ("emea/lab-dc2"), names as the
        server stores them: what the file service's dcPath and FindByInventoryPath take."""
        seen = set()
        while obj is not None and _key(obj) in self.nodes and _key(obj) not in seen:
            seen.add(_key(obj))
            if isinstance(obj, vim.Datacenter):
                return self._raw_path(obj)
            obj = self.nodes[_key(obj)][1].get("parent")
        return ""

    def _raw_path(self, obj) -> str:
        parts = []
        while obj is not None and _key(obj) in self.nodes:
            props = self.nodes[_key(obj)][1]
            parts.append(props.get("name", ""))
            obj = props.get("parent")
        return "/".join(reversed(parts))

    def vm_ref(self, obj, p: dict) -> VmRef:
        return VmRef(
            moref=obj._moId,
            name=unescape_name(p.get("name", "")),
            uuid=p.get("config.uuid") or "",
            instance_uuid=p.get("config.instanceUuid") or "",
            ip_address=p.get("guest.ipAddress") or "",
            power_state=str(p.get("runtime.powerState") or ""),
            host=self.name(p.get("runtime.host")),
            resource_pool=self.path(p.get("resourcePool"))
            if p.get("resourcePool") is not None
            else "",
            folder=self.path(p.get("parent")) if p.get("parent") is not None else "",
            vmx_path=p.get("config.files.vmPathName") or "",
            datacenter=self.datacenter_of(obj),
            tools_running=p.get("guest.toolsRunningStatus") == "guestToolsRunning",
        )


def _vm_ips(p: dict) -> set[str]:
    ips = {p.get("guest.ipAddress") or ""}
    for nic in p.get("guest.net") or []:
        ips.update(nic.ipAddress or [])
    return {_canonical_ip(ip) for ip in ips if ip}


def _canonical_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return text


def _wanted_ips(value: str) -> set[str]:
    """An IP as given, or every address a DNS name resolves to."""
    try:
        return {str(ipaddress.ip_address(value))}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(value, None)
    except (socket.gaierror, UnicodeError) as exc:
        raise errors.NotFoundError(f"ipaddr:{value}: the name does not resolve ({exc})") from exc
    return {_canonical_ip(str(info[4][0])) for info in infos}


def _matches(selector: Selector, obj, p: dict, ctx) -> bool:
    kind, value = selector.kind, selector.value
    if kind == "any":
        return True
    if kind == "name":
        return unescape_name(p.get("name", "")) == value
    if kind == "moref":
        return obj._moId == value
    if kind == "uuid":
        return normalise_uuid(p.get("config.uuid") or "") == value
    if kind == "powerstate":
        return str(p.get("runtime.powerState")) == POWER_STATES[value]
    if kind == "ipaddr":
        return bool(_vm_ips(p) & ctx)
    raise errors.UsageError(f"unknown selector kind {kind!r}")


def find_vms(session, selector: Selector) -> list[VmRef]:
    """Every VM the selector matches, sorted by name then moref."""
    ctx = _wanted_ips(selector.value) if selector.kind == "ipaddr" else None
    with translated("listing the inventory"):
        inv = _Inventory(session)
    found = [inv.vm_ref(obj, p) for obj, p in inv.vms if _matches(selector, obj, p, ctx)]
    return sorted(found, key=lambda v: (v.name, v.moref))


def resolve_vm(session, selector: Selector) -> VmRef:
    """Exactly one VM: none is NotFoundError, several is AmbiguousError listing them."""
    found = find_vms(session, selector)
    if not found:
        raise errors.NotFoundError(f"no VM matches {selector}")
    if len(found) > 1:
        listed = "; ".join(f"moref:{v.moref} in {v.folder or '?'}" for v in found)
        raise errors.AmbiguousError(
            f"{len(found)} VMs match {selector}: {listed}; pick one with moref:<id>"
        )
    return found[0]


def get_vm(session, moref: str) -> VmRef | None:
    """The VM with this moref, or None when it no longer exists."""
    found = find_vms(session, Selector("moref", moref))
    return found[0] if found else None


def vm_object(session, vm: VmRef | str):
    """The pyVmomi VirtualMachine for a VmRef or moref (for the other vsphere modules)."""
    return vim.VirtualMachine(vm if isinstance(vm, str) else vm.moref, session.stub)
