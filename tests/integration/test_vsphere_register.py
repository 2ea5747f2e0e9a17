"""Register, power on, destroy, and an ambiguous name across folders, against a real
endpoint (lab and vcsim). The VM registered here is built from files the test writes into
the datastore, so destroying it deletes nothing of the endpoint's own VMs."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from vcbproxy import errors
from vcbproxy.models import DatastorePath
from vcbproxy.selectors import Selector, parse_selector
from vcbproxy.vsphere import register
from vcbproxy.vsphere.inventory import find_vms, get_vm, resolve_vm
from vcbproxy.vsphere.tasks import wait_for_task

pytestmark = pytest.mark.timeout(120)
VMX = 'config.version = "8"\nvirtualHW.version = "13"\nguestOS = "otherlinux-64"\n'


def test_same_name_in_two_folders_is_ambiguous(session, vsphere_endpoint):
    ep = vsphere_endpoint
    existing = find_vms(session, Selector("any"))[0]
    datastore = DatastorePath.parse(existing.vmx_path).datastore
    # The files a registration opens: .vmx, <name>.nvram and vmware.log beside it.
    for suffix, data in ((".vmx", VMX), (".nvram", ""), ("", "")):
        rel = f"vcbproxy-dupe/{existing.name}{suffix}" if suffix else "vcbproxy-dupe/vmware.log"
        ep.write_file(datastore, rel, data.encode())
    dc_folder = register.find_folder(session, f"/{existing.datacenter}/vm")
    folder = dc_folder.CreateFolder("vcbproxy-dupe")  # server-side setup, not under test
    try:
        dupe = register.register_vm(
            session,
            DatastorePath(datastore, f"vcbproxy-dupe/{existing.name}.vmx"),
            name=existing.name,
            datacenter=existing.datacenter,
            folder=f"/{existing.datacenter}/vm/vcbproxy-dupe",
            pool=existing.resource_pool,
        )
        try:
            assert dupe.name == existing.name and dupe.moref != existing.moref
            assert dupe.folder == f"/{existing.datacenter}/vm/vcbproxy-dupe"
            with pytest.raises(errors.AmbiguousError) as info:
                resolve_vm(session, parse_selector(f"name:{existing.name}"))
            message = str(info.value)
            assert existing.moref in message and dupe.moref in message
            assert existing.folder in message and dupe.folder in message
            assert resolve_vm(session, parse_selector(f"moref:{dupe.moref}")) == get_vm(
                session, dupe.moref
            )

            if dupe.power_state != "poweredOn":
                register.power_on(session, dupe.moref)
            assert get_vm(session, dupe.moref).power_state == "poweredOn"
            # A task that fails comes back as a vcbproxy error carrying the fault's name.
            with pytest.raises(errors.VcbProxyError, match="InvalidPowerState"):
                register.power_on(session, dupe.moref)
            wait_for_task(
                session,
                vim.VirtualMachine(dupe.moref, session.stub).PowerOffVM_Task(),
                timeout=60,
                what="powering off",
            )
        finally:
            register.destroy_vm(session, dupe.moref)
        assert get_vm(session, dupe.moref) is None
        assert resolve_vm(session, parse_selector(f"name:{existing.name}")) == existing
    finally:
        wait_for_task(session, folder.Destroy_Task(), timeout=60, what="removing the test folder")


def test_lookups_of_missing_paths_are_not_found(session, vsphere_endpoint):
    dc = vsphere_endpoint.datacenter
    for lookup in (register.find_folder, register.find_pool, register.find_host):
        with pytest.raises(errors.NotFoundError):
            lookup(session, f"/{dc}/no-such-thing/anywhere")
    with pytest.raises(errors.NotFoundError):
        register.find_pool(session, f"/{dc}/vm")  # exists, but is a folder, not a pool
