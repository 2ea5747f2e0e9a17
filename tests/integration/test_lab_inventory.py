"""Inventory through the property collector, container views and the search index."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyVmomi import vim, vmodl

PC = vmodl.query.PropertyCollector


def _vm_view(si, types=(vim.VirtualMachine,), container=None):
    return si.content.viewManager.CreateContainerView(
        container or si.content.rootFolder, list(types), True
    )


def _retrieve(si, view, paths, max_objects=None):
    spec = PC.FilterSpec(
        objectSet=[
            PC.ObjectSpec(
                obj=view,
                skip=True,
                selectSet=[
                    PC.TraversalSpec(
                        name="traverseEntities",
                        path="view",
                        skip=False,
                        type=vim.view.ContainerView,
                    )
                ],
            )
        ],
        propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=list(paths))],
    )
    pc = si.content.propertyCollector
    result = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=max_objects))
    pages = [result]
    while result.token:
        result = pc.ContinueRetrievePropertiesEx(result.token)
        pages.append(result)
    return pages


def _by_name(pages):
    out = {}
    for page in pages:
        for oc in page.objects:
            props = {p.name: p.val for p in oc.propSet}
            out.setdefault(props.get("name"), []).append((oc.obj, props))
    return out


def test_default_vms_and_escaped_names(lab_si):
    view = _vm_view(lab_si)
    names = sorted(vm.name for vm in view.view)
    assert names == sorted(
        [
            "web01",
            "db01",
            "files01",
            "notools",
            "my vm ünïcode %2f test",
            "dup",
            "dup",
            "chain01",
            "chain02",
            "nfs01",
            "web02",  # in the second datacenter
        ]
    )
    view.DestroyView()


def test_paging_with_max_objects(lab_si):
    view = _vm_view(lab_si)
    pages = _retrieve(
        lab_si,
        view,
        ["name", "summary.config.name", "guest.ipAddress", "runtime.powerState"],
        max_objects=3,
    )
    assert [len(p.objects) for p in pages] == [3, 3, 3, 2]
    assert all(p.token for p in pages[:-1]) and pages[-1].token is None
    vms = _by_name(pages)
    assert len(vms["dup"]) == 2
    web = vms["web01"][0][1]
    assert web["guest.ipAddress"] == "10.0.0.11" and web["summary.config.name"] == "web01"
    # Without Tools (or powered off) vSphere has no IP: the property is simply absent.
    assert "guest.ipAddress" not in vms["notools"][0][1]
    assert vms["notools"][0][1]["runtime.powerState"] == "poweredOn"
    assert vms["files01"][0][1]["runtime.powerState"] == "poweredOff"
    with pytest.raises(vmodl.fault.InvalidArgument):
        lab_si.content.propertyCollector.ContinueRetrievePropertiesEx(pages[0].token)


def test_invalid_property_path_faults(lab_si):
    view = _vm_view(lab_si)
    with pytest.raises(vmodl.query.InvalidProperty):
        _retrieve(lab_si, view, ["no.such.property"])


def test_view_type_filter_and_folders(lab_si):
    view = _vm_view(lab_si, types=[vim.Folder])
    assert {"teamA", "teamB", "vm"} <= {f.name for f in view.view}
    dc = lab_si.content.rootFolder.childEntity[0]
    assert {h.name for h in dc.hostFolder.childEntity[0].host} == {
        "esx01.lab.local",
        "esx02.lab.local",
    }
    assert {d.name for d in dc.datastore} == {"datastore1", "datastore2", "nfsstore"}
    team_a = [f for f in view.view if f.name == "teamA"][0]
    assert [vm.name for vm in _vm_view(lab_si, container=team_a).view] == ["dup"]


def test_vm_hardware_and_layout(lab_si):
    db = lab_si.content.searchIndex.FindByInventoryPath("lab-dc/vm/db01")
    disks = [d for d in db.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    assert [d.key for d in disks] == [2000, 2001, 2002]
    assert disks[2].backing.diskMode == "independent_persistent"
    assert disks[2].backing.fileName.startswith("[datastore2] db01/")
    files = {f.name: f.type for f in db.layoutEx.file}
    assert files["[datastore1] db01/db01.vmx"] == "config"
    assert files["[datastore1] db01/db01.nvram"] == "nvram"
    assert files["[datastore1] db01/vmware.log"] == "log"
    assert files["[datastore1] db01/db01-flat.vmdk"] == "diskExtent"
    assert db.capability.changeTrackingSupported is True
    assert {d.name for d in db.datastore} == {"datastore1", "datastore2"}


def test_user_snapshot_chain(lab_si):
    vm = lab_si.content.searchIndex.FindByInventoryPath("lab-dc/vm/chain01")
    tree = vm.snapshot.rootSnapshotList
    assert tree[0].name == "before-upgrade"
    assert tree[0].childSnapshotList[0].name == "after-upgrade"
    assert vm.snapshot.currentSnapshot == tree[0].childSnapshotList[0].snapshot
    disk = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)][0]
    chain = []
    backing = disk.backing
    while backing:
        chain.append(backing.fileName)
        backing = backing.parent
    assert chain == [
        "[datastore1] chain01/chain01-000002.vmdk",
        "[datastore1] chain01/chain01-000001.vmdk",
        "[datastore1] chain01/chain01.vmdk",
    ]
    first = tree[0].snapshot.config.hardware.device
    first_disk = [d for d in first if isinstance(d, vim.vm.device.VirtualDisk)][0]
    assert first_disk.backing.fileName == "[datastore1] chain01/chain01.vmdk"


def test_search_index(lab_si):
    si = lab_si.content.searchIndex
    web = si.FindByInventoryPath("lab-dc/vm/web01")
    assert web is not None and web.name == "web01"
    assert si.FindByUuid(uuid=web.config.uuid, vmSearch=True) == web
    assert si.FindByUuid(uuid=web.config.instanceUuid, vmSearch=True, instanceUuid=True) == web
    assert si.FindByUuid(uuid=web.config.instanceUuid, vmSearch=True) is None
    assert si.FindByIp(ip="10.0.0.11", vmSearch=True) == web
    assert si.FindByIp(ip="10.0.0.99", vmSearch=True) is None
    assert (
        si.FindByDatastorePath(
            datacenter=lab_si.content.rootFolder.childEntity[0], path="[datastore1] web01/web01.vmx"
        )
        == web
    )
    uni = si.FindByInventoryPath("lab-dc/vm/my vm ünïcode %2f test")
    assert uni is not None and uni.config.files.vmPathName.startswith(
        "[datastore1] my vm ünïcode %2f test/"
    )
    a = si.FindByInventoryPath("lab-dc/vm/teamA/dup")
    b = si.FindByInventoryPath("lab-dc/vm/teamB/dup")
    assert a != b and a.config.files.vmPathName != b.config.files.vmPathName


def test_wait_for_updates_reports_changes(lab_si):
    pc = lab_si.content.propertyCollector
    vm = lab_si.content.searchIndex.FindByInventoryPath("lab-dc/vm/files01")
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=vm)],
        propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=["runtime.powerState"])],
    )
    flt = pc.CreateFilter(spec, True)
    try:
        first = pc.WaitForUpdatesEx("", vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=5))
        change = first.filterSet[0].objectSet[0].changeSet[0]
        assert (change.name, change.val) == ("runtime.powerState", "poweredOff")
        none = pc.WaitForUpdatesEx(first.version, PC.WaitOptions(maxWaitSeconds=0))
        assert none is None
    finally:
        flt.DestroyPropertyFilter()


def test_datastores_have_a_vmfs_version_or_are_nfs(lab_si):
    dc = lab_si.content.rootFolder.childEntity[0]
    by_name = {d.name: d for d in dc.datastore}
    for name, major in (("datastore1", 6), ("datastore2", 5)):
        assert by_name[name].summary.type == "VMFS"
        info = by_name[name].info
        assert isinstance(info, vim.host.VmfsDatastoreInfo) and info.vmfs.majorVersion == major
    nfs = by_name["nfsstore"]
    assert nfs.summary.type == "NFS"
    assert isinstance(nfs.info, vim.host.NasDatastoreInfo) and nfs.info.nas.type == "NFS"


@pytest.mark.parametrize(
    "vm_name, datastore, create_type, extent, delta_format",
    [
        ("chain01", "datastore1", "seSparse", "SESPARSE", "seSparseFormat"),  # VMFS6
        ("chain02", "datastore2", "vmfsSparse", "VMFSSPARSE", "redoLogFormat"),  # VMFS5
    ],
)
def test_snapshot_deltas_are_what_esxi_writes_on_that_datastore(
    lab, lab_si, vm_name, datastore, create_type, extent, delta_format
):
    from vcbproxy.vmdk import descriptor

    vm = lab_si.content.searchIndex.FindByInventoryPath(f"lab-dc/vm/{vm_name}")
    disk = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)][0]
    assert disk.backing.deltaDiskFormat == delta_format
    assert disk.backing.parent.deltaDiskFormat == delta_format
    assert disk.backing.parent.parent.deltaDiskFormat is None  # the base is flat
    root = Path(lab.info["datastores"][datastore]) / vm_name
    top = descriptor.parse((root / f"{vm_name}-000002.vmdk").read_text())
    assert top.create_type == create_type
    assert [e.type for e in top.extents] == [extent]
    suffix = "-sesparse.vmdk" if extent == "SESPARSE" else "-delta.vmdk"
    assert top.extents[0].filename == f"{vm_name}-000002{suffix}"
    files = {f.name: f.type for f in vm.layoutEx.file}
    assert files[f"[{datastore}] {vm_name}/{vm_name}-000002{suffix}"] == "diskExtent"
    assert files[f"[{datastore}] {vm_name}/{vm_name}-000002.vmdk"] == "diskDescriptor"
