"""SearchIndex: find VMs by BIOS/instance UUID, IP, inventory path, datastore path."""

from __future__ import annotations

from vcblab.inventory import Entity
from vcblab.methods import method


def _vms(call, datacenter):
    """The VMs of one datacenter (all of them without one), found through the inventory."""
    vms = call.lab.vms()
    if datacenter is None:
        return vms
    return [vm for vm in vms if getattr(vm.datacenter(), "moref", None) == datacenter._moId]


@method("FindByUuid")
def find_by_uuid(call, this, uuid, vmSearch, datacenter=None, instanceUuid=None):
    hits = find_all_by_uuid(call, this, uuid, vmSearch, datacenter, instanceUuid)
    return hits[0] if hits else None


@method("FindAllByUuid")
def find_all_by_uuid(call, this, uuid, vmSearch, datacenter=None, instanceUuid=None):
    if not vmSearch:
        return []  # the lab's hosts have no hardware UUIDs worth searching
    want = (uuid or "").lower()
    attr = "instance_uuid" if instanceUuid else "uuid"
    return [vm.ref() for vm in _vms(call, datacenter) if getattr(vm, attr).lower() == want]


@method("FindByIp")
def find_by_ip(call, this, ip, vmSearch, datacenter=None):
    hits = find_all_by_ip(call, this, ip, vmSearch, datacenter)
    return hits[0] if hits else None


@method("FindAllByIp")
def find_all_by_ip(call, this, ip, vmSearch, datacenter=None):
    if not vmSearch:
        return []
    # Like vSphere, only a VM whose Tools report the address can be found by it.
    return [vm.ref() for vm in _vms(call, datacenter) if vm.tools_running() and vm.ip == ip]


@method("FindByDatastorePath")
def find_by_datastore_path(call, this, datacenter, path):
    for vm in _vms(call, datacenter):
        if vm.vmx_path == path:
            return vm.ref()
    return None


@method("FindByInventoryPath")
def find_by_inventory_path(call, this, inventoryPath):
    """'lab-dc/vm/teamA/dup': names as the inventory shows them ('/' in a name is %2f)."""
    node: Entity = call.lab.root_folder
    for part in [p for p in (inventoryPath or "").split("/") if p]:
        node = next((c for c in node.children() if c.inventory_name == part), None)
        if node is None:
            return None
    return node.ref()


@method("FindChild")
def find_child(call, this, entity, name):
    parent = call.lab.obj(entity._moId)
    if not isinstance(parent, Entity):
        return None
    return next((c.ref() for c in parent.children() if c.inventory_name == name), None)
