"""Inventory and selectors against a real endpoint (lab and vcsim, same bodies).

Each test reads the endpoint's own VMs first, so it depends on no peer's naming.
"""

from __future__ import annotations

import re

import pytest

from vcbproxy import errors
from vcbproxy.models import DatastorePath
from vcbproxy.selectors import Selector, parse_selector
from vcbproxy.vsphere.inventory import find_vms, get_vm, resolve_vm

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def vms(session):
    found = find_vms(session, Selector("any"))
    assert len(found) >= 2, "the endpoint should offer at least two VMs"
    return found


def test_any_lists_every_vm_with_identity_and_placement(session, vms, vsphere_endpoint):
    assert len({v.moref for v in vms}) == len(vms)
    for vm in vms:
        assert vm.name and vm.moref
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", vm.uuid.lower()
        )
        assert vm.power_state in ("poweredOn", "poweredOff", "suspended")
        # The inventory path of the VM's own datacenter (the lab has a second one, in a folder).
        assert vm.datacenter in vsphere_endpoint.datacenters
        assert vm.folder.startswith(f"/{vm.datacenter}/")
        assert vm.resource_pool.startswith(f"/{vm.datacenter}/")
        assert vm.host
        assert DatastorePath.parse(vm.vmx_path).path.endswith(".vmx")


def test_name_is_exact_and_case_sensitive(session, vms):
    vm = vms[0]
    assert resolve_vm(session, parse_selector(f"name:{vm.name}")) == vm
    with pytest.raises(errors.NotFoundError) as info:
        resolve_vm(session, parse_selector(f"name:{vm.name.swapcase()}"))
    assert not isinstance(info.value, errors.AmbiguousError)
    assert find_vms(session, parse_selector(f"name:{vm.name[:-1]}")) == []


def test_moref_uuid_and_get_vm(session, vms):
    vm = vms[-1]
    assert resolve_vm(session, parse_selector(f"moref:{vm.moref}")) == vm
    assert resolve_vm(session, parse_selector(f"uuid:{vm.uuid.upper()}")) == vm
    assert resolve_vm(session, parse_selector(f"uuid:{vm.uuid.replace('-', '')}")) == vm
    assert get_vm(session, vm.moref) == vm
    assert get_vm(session, "vm-does-not-exist") is None


def test_powerstate_partitions_the_inventory(session, vms):
    on = find_vms(session, parse_selector("powerstate:on"))
    off = find_vms(session, parse_selector("powerstate:off"))
    assert all(v.power_state == "poweredOn" for v in on)
    assert all(v.power_state == "poweredOff" for v in off)
    assert {v.moref for v in on} | {v.moref for v in off} == {
        v.moref for v in vms if v.power_state != "suspended"
    }


def test_several_matches_are_ambiguous_and_listed(session, vms):
    with pytest.raises(errors.AmbiguousError) as info:
        resolve_vm(session, Selector("any"))
    assert info.value.exit_code == errors.NOT_FOUND
    for vm in vms:
        assert vm.moref in str(info.value)
    assert "moref:" in str(info.value)


def test_ipaddr_matches_exactly_and_resolves_names(session, vms):
    """Checks the guest IPs the endpoint reports (vcsim reports none without Tools); an
    address nobody has, and a name that does not resolve, are 'not found' either way."""
    for vm in [v for v in vms if v.ip_address]:
        assert vm in find_vms(session, parse_selector(f"ipaddr:{vm.ip_address}"))
    with pytest.raises(errors.NotFoundError):
        resolve_vm(session, parse_selector("ipaddr:192.0.2.254"))  # TEST-NET-1: never assigned
    with pytest.raises(errors.NotFoundError, match="does not resolve"):
        find_vms(session, parse_selector("ipaddr:no-such-host.invalid"))


def test_names_with_slash_and_percent_are_shown_and_matched_plain(session, vms):
    """vSphere stores '/' and '%' in names escaped (%2f, %25); users type them plain."""
    from pyVmomi import vim

    from vcbproxy.vsphere.tasks import wait_for_task

    vm = vms[0]
    odd = f"{vm.name}/100%"
    obj = vim.VirtualMachine(vm.moref, session.stub)
    wait_for_task(session, obj.Rename_Task(newName=odd), timeout=60, what="renaming")
    try:
        found = resolve_vm(session, parse_selector(f"name:{odd}"))
        assert found.moref == vm.moref and found.name == odd
        assert get_vm(session, vm.moref).name == odd
    finally:
        wait_for_task(session, obj.Rename_Task(newName=vm.name), timeout=60, what="renaming back")
    assert get_vm(session, vm.moref).name == vm.name
