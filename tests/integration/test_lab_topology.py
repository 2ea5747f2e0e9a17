"""The lab's inventory has a real vCenter's shape: two datacenters (the second inside a
datacenter folder) that each have a datastore named ``datastore1``, a DRS cluster and one
without DRS. A datastore name means something only inside its datacenter, and the lab
answers as vCenter does where a client forgets that."""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path
from urllib.parse import quote

import pytest
from pyVmomi import vim, vmodl

from tests.fixtures.lab import run_task
from vcblab.client import LabClient

DC2 = "emea/lab-dc2"


def _get(info: dict, path: str, cookie: str) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=info["cert_file"])
    conn = http.client.HTTPSConnection("127.0.0.1", info["https_port"], context=ctx, timeout=30)
    try:
        conn.request("GET", path, headers={"Cookie": cookie})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _folder_url(rel: str, dc: str, ds: str = "datastore1") -> str:
    return f"/folder/{quote(rel)}?dcPath={quote(dc, safe='')}&dsName={ds}"


def test_two_datacenters_each_with_its_own_datastore1(lab_si):
    search = lab_si.content.searchIndex
    dc1 = search.FindByInventoryPath("lab-dc")
    dc2 = search.FindByInventoryPath(DC2)
    assert isinstance(dc1, vim.Datacenter) and isinstance(dc2, vim.Datacenter)
    assert isinstance(dc2.parent, vim.Folder) and dc2.parent.name == "emea"
    assert dc2.parent.parent == lab_si.content.rootFolder
    assert search.FindByInventoryPath("lab-dc2") is None  # not at the root
    ds1 = {d.name: d for d in dc1.datastore}["datastore1"]
    ds2 = {d.name: d for d in dc2.datastore}["datastore1"]
    assert [d.name for d in dc2.datastore] == ["datastore1"]
    assert ds1 != ds2 and ds1.summary.url != ds2.summary.url
    assert ds2.parent == dc2.datastoreFolder
    web02 = search.FindByInventoryPath(f"{DC2}/vm/web02")
    assert web02 is not None and list(web02.datastore) == [ds2]
    assert web02.config.files.vmPathName == "[datastore1] web02/web02.vmx"
    # A datastore path is looked up in the datacenter named with it.
    assert search.FindByDatastorePath(dc2, "[datastore1] web02/web02.vmx") == web02
    assert search.FindByDatastorePath(dc1, "[datastore1] web02/web02.vmx") is None
    # Hosts see their own datacenter's datastores only.
    host = web02.runtime.host
    assert host.name == "esx03.lab.local" and list(host.datastore) == [ds2]
    assert [h.key for h in ds2.host] == [host]


def test_clusters_with_and_without_drs(lab_si):
    search = lab_si.content.searchIndex
    drs = search.FindByInventoryPath("lab-dc/host/lab-cluster")
    plain = search.FindByInventoryPath(f"{DC2}/host/emea-cluster")
    assert drs.configurationEx.drsConfig.enabled is True
    assert plain.configurationEx.drsConfig.enabled is False
    assert [h.name for h in plain.host] == ["esx03.lab.local"]
    assert plain.resourcePool.owner == plain
    assert {h.name for h in drs.host} == {"esx01.lab.local", "esx02.lab.local"}


def test_folder_dcpath_is_the_inventory_path_of_the_datacenter(lab):
    info = lab.info
    cookie = LabClient(info).login()
    on_disk = Path(info["datacenters"][DC2]["datastores"]["datastore1"]) / "web02" / "web02.vmx"
    for dc in (DC2, "/" + DC2):  # with or without the leading slash (govmomi sends one)
        status, body = _get(info, _folder_url("web02/web02.vmx", dc), cookie)
        assert status == 200, dc
        assert body == on_disk.read_bytes()
    # The bare name is not a path, and the other datacenter's datastore1 has no web02.
    for dc in ("lab-dc2", "lab-dc"):
        status, _ = _get(info, _folder_url("web02/web02.vmx", dc), cookie)
        assert status == 404, dc
    status, body = _get(info, _folder_url("web01/web01.vmx", "lab-dc"), cookie)
    assert status == 200 and body.startswith(b".encoding")


def test_file_manager_needs_the_datacenter_when_the_name_is_shared(si):
    content = si.content
    dc2 = content.searchIndex.FindByInventoryPath(DC2)
    fm = content.fileManager
    with pytest.raises(vmodl.fault.InvalidArgument) as info:
        fm.MakeDirectory(name="[datastore1] vcbproxy-topology", datacenter=None)
    assert info.value.invalidProperty == "datacenter"
    fm.MakeDirectory(name="[datastore1] vcbproxy-topology", datacenter=dc2)
    try:
        browser = {d.name: d for d in dc2.datastore}["datastore1"].browser
        found = run_task(browser.SearchDatastore_Task(datastorePath="[datastore1]"))
        assert "vcbproxy-topology" in {f.path for f in found.file}
        dc1_ds1 = {d.name: d for d in content.rootFolder.childEntity[0].datastore}["datastore1"]
        found = run_task(dc1_ds1.browser.SearchDatastore_Task(datastorePath="[datastore1]"))
        assert "vcbproxy-topology" not in {f.path for f in found.file}
    finally:
        run_task(fm.DeleteDatastoreFile_Task(name="[datastore1] vcbproxy-topology", datacenter=dc2))
