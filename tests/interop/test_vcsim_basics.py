"""What govmomi's vcsim (Debian's 0.24) does, pinned with plain pyVmomi and HTTPS.

These tests do not exercise vcbproxy: they record the peer's behaviour that vcbproxy's
vSphere layer has to cope with, so a change in vcsim shows up here first, with a name,
instead of as a puzzling failure in an export test. Where vcsim differs from vSphere the
test says so (see tests/interop/README.md for the table).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import ssl
import time
import urllib.parse
from pathlib import Path

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from tests.fixtures.endpoints import vcsim_endpoint

pytestmark = pytest.mark.vcsim

SNAPSHOT = "_VCB-BACKUP_"


def connect(vcsim, **kw):
    ctx = ssl.create_default_context(cafile=vcsim["cert_file"])
    args = dict(
        host=vcsim["host"],
        port=vcsim["port"],
        user=vcsim["user"],
        pwd=vcsim["password"],
        sslContext=ctx,
    )
    args.update(kw)
    return SmartConnect(**args)


@pytest.fixture(scope="module")
def si(vcsim):
    si = connect(vcsim)
    yield si
    Disconnect(si)


def all_vms(si) -> dict[str, vim.VirtualMachine]:
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return {vm.name: vm for vm in view.view}
    finally:
        view.Destroy()


def properties(si, obj, *paths: str) -> dict:
    """Read properties with RetrieveContents: unset ones are absent (see the Fetch test)."""
    spec = vim.PropertyFilterSpec(
        objectSet=[vim.ObjectSpec(obj=obj)],
        propSet=[vim.PropertySpec(type=type(obj), pathSet=list(paths))],
    )
    found = {}
    for content in si.content.propertyCollector.RetrieveContents([spec]):
        found.update({p.name: p.val for p in content.propSet})
    return found


def wait_state(si, task, timeout: float = 10.0) -> str:
    """Poll ``info.state`` alone: the whole ``info`` does not deserialise for every task."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = properties(si, task, "info.state")["info.state"]
        if state in ("success", "error"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"{task} still running after {timeout} s")


def disks(config) -> list[vim.vm.device.VirtualDisk]:
    return [d for d in config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]


# --- TLS and login ------------------------------------------------------------------


def test_tls_certificate_matches_the_printed_thumbprint(vcsim):
    pem = ssl.get_server_certificate((vcsim["host"], vcsim["port"]))
    der = ssl.PEM_cert_to_DER_cert(pem)
    digest = hashlib.sha256(der).hexdigest().upper()
    assert ":".join(digest[i : i + 2] for i in range(0, 64, 2)) == vcsim["thumbprint_sha256"]
    assert ssl.PEM_cert_to_DER_cert(Path(vcsim["cert_file"]).read_text()) == der


def test_login_verifies_tls_and_reports_a_vcenter(si):
    about = si.content.about
    assert about.apiType == "VirtualCenter"  # the VPX model, not a standalone ESX
    assert about.apiVersion.startswith("6.")
    assert si.content.sessionManager.currentSession.userName


def test_wrong_password_is_invalid_login(vcsim):
    with pytest.raises(vim.fault.InvalidLogin):
        connect(vcsim, pwd="not-the-password")


def test_unverified_tls_is_refused_without_the_cert(vcsim):
    with pytest.raises(ssl.SSLCertVerificationError):
        SmartConnect(
            host=vcsim["host"],
            port=vcsim["port"],
            user=vcsim["user"],
            pwd=vcsim["password"],
            sslContext=ssl.create_default_context(),
        )


# --- inventory and files ------------------------------------------------------------


def test_vpx_inventory_and_vm_files(si, vcsim):
    vms = all_vms(si)
    assert sorted(vms) == sorted(vcsim["vms"])
    assert len(vms) == 4 and vcsim["datacenter"] == "DC0"
    assert list(vcsim["datastores"]) == ["LocalDS_0"]
    ds_dir = vcsim["datastores"]["LocalDS_0"]
    for name, vm in vms.items():
        vmx = vm.config.files.vmPathName
        assert vmx == f"[LocalDS_0] {name}/{name}.vmx"
        [disk] = disks(vm.config)
        assert disk.backing.fileName == f"[LocalDS_0] {name}/disk1.vmdk"
        assert isinstance(disk.backing, vim.vm.device.VirtualDisk.FlatVer2BackingInfo)
        # capacityInKB only: vSphere (5.5+) also fills capacityInBytes, vcsim leaves it unset.
        assert disk.capacityInKB > 0 and disk.capacityInBytes is None
        # The files exist in the datastore directory, but vcsim writes no content into them:
        # the descriptor and extent are empty, so tests write the bytes they compare.
        for rel in (
            f"{name}/{name}.vmx",
            f"{name}/{name}.nvram",
            f"{name}/disk1.vmdk",
            f"{name}/disk1-flat.vmdk",
        ):
            assert (ds_dir / rel).is_file(), rel
        assert (ds_dir / name / f"{name}.vmx").stat().st_size == 0


def test_guest_ips_set_through_extra_config_are_reported(si, vcsim):
    # The fixture's SET.guest.ipAddress reconfigure shows in guest and summary, as Tools
    # reports would in vSphere.
    assert sorted(vcsim["vm_ips"]) == sorted(vcsim["vms"])
    for name, vm in all_vms(si).items():
        got = properties(si, vm, "guest.ipAddress", "summary.guest.ipAddress")
        assert got == {
            "guest.ipAddress": vcsim["vm_ips"][name],
            "summary.guest.ipAddress": vcsim["vm_ips"][name],
        }


def test_layout_ex_lists_extra_entries_without_the_vm_directory(si):
    # vSphere lists every file once with its directory; vcsim 0.24 additionally lists
    # "[LocalDS_0] disk1-flat.vmdk" etc. without it (files that do not exist). Clients that
    # take the file list from layoutEx must not trust paths blindly.
    vm = all_vms(si)["DC0_H0_VM1"]
    names = [f.name for f in vm.layoutEx.file]
    assert "[LocalDS_0] DC0_H0_VM1/disk1-flat.vmdk" in names
    assert "[LocalDS_0] disk1-flat.vmdk" in names


# --- snapshots ----------------------------------------------------------------------


def test_snapshot_create_has_no_delta_disk_and_no_cbt(si):
    vm = all_vms(si)["DC0_H0_VM0"]
    task = vm.CreateSnapshot_Task(name=SNAPSHOT, description="interop", memory=False, quiesce=False)
    assert WaitForTask(task) == "success"  # create: WaitForTask works
    snap = task.info.result
    try:
        assert isinstance(snap, vim.vm.Snapshot)
        assert [s.name for s in vm.snapshot.rootSnapshotList] == [SNAPSHOT]
        # No delta disk: the running VM still writes into the base disk (vSphere would
        # switch it to disk1-000001.vmdk with the base as parent).
        [before] = disks(snap.config)
        [after] = disks(vm.config)
        assert after.backing.fileName == before.backing.fileName
        assert after.backing.parent is None
        # No changed block tracking at all.
        with pytest.raises(vmodl.fault.MethodNotFound):
            vm.QueryChangedDiskAreas(
                snapshot=snap, deviceKey=after.key, startOffset=0, changeId="*"
            )
    finally:
        remove = snap.RemoveSnapshot_Task(removeChildren=False)
        assert wait_state(si, remove) == "success"
    assert "snapshot" not in properties(si, vm, "snapshot")


def test_snapshot_remove_task_entity_breaks_wait_for_task(si):
    # vcsim reports the Snapshot itself as the removal task's info.entity; pyVmomi's type
    # check allows only ManagedEntity there, so WaitForTask (which reads task.info) raises
    # TypeError. vSphere reports the VM. Reading info.state alone works.
    vm = all_vms(si)["DC0_H0_VM1"]
    task = vm.CreateSnapshot_Task(name=SNAPSHOT, memory=False, quiesce=False)
    WaitForTask(task)
    remove = task.info.result.RemoveSnapshot_Task(removeChildren=False)
    with pytest.raises(TypeError, match='"entity" expected type vim.ManagedEntity'):
        WaitForTask(remove)
    assert wait_state(si, remove) == "success"
    assert (
        properties(si, remove, "info.descriptionId")["info.descriptionId"]
        == "VirtualMachineSnapshot.removeSnapshot"
    )
    assert "snapshot" not in properties(si, vm, "snapshot")


def test_reading_an_unset_property_through_fetch_drops_the_connection(vcsim):
    # pyVmomi's lazy accessors (vm.snapshot) call PropertyCollector.Fetch; vcsim 0.24 panics
    # on an unset property and closes the connection without a response. vSphere answers
    # None. RetrieveContents (properties() above) is safe on both.
    si = connect(vcsim)
    try:
        vm = all_vms(si)["DC0_C0_RP0_VM0"]
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            vm.snapshot  # noqa: B018 - the property read is the test
    finally:
        try:
            Disconnect(si)
        except Exception:  # noqa: BLE001 - the session's connection is gone already
            pass
    # The panic is per request: the server (shared by the session's other tests) lives on.
    again = connect(vcsim)
    try:
        vm = all_vms(again)["DC0_C0_RP0_VM0"]
        assert properties(again, vm, "name", "snapshot") == {"name": "DC0_C0_RP0_VM0"}
    finally:
        Disconnect(again)


# --- datastore file service ---------------------------------------------------------


def file_request(vcsim, method: str, ds_path: str, *, headers=None, body=None, cookie=None):
    query = urllib.parse.urlencode({"dcPath": vcsim["datacenter"], "dsName": "LocalDS_0"})
    conn = http.client.HTTPSConnection(
        vcsim["host"],
        vcsim["port"],
        timeout=10,
        context=ssl.create_default_context(cafile=vcsim["cert_file"]),
    )
    try:
        hdrs = dict(headers or {})
        if cookie:
            hdrs["Cookie"] = cookie
        conn.request(
            method, f"/folder/{urllib.parse.quote(ds_path)}?{query}", body=body, headers=hdrs
        )
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_file_service_get_range_and_head(si, vcsim):
    endpoint = vcsim_endpoint(vcsim)
    data = os.urandom(4096)
    path = "interop-basics/disk1-flat.vmdk"  # not a VM's own file: the vcsim is shared
    endpoint.write_file("LocalDS_0", path, data)
    cookie = si._stub.cookie

    status, headers, body = file_request(
        vcsim, "GET", path, cookie=cookie, headers={"Range": "bytes=100-1123"}
    )
    assert status == 206 and body == data[100:1124]
    assert headers["content-range"] == "bytes 100-1123/4096"

    status, headers, body = file_request(
        vcsim, "GET", path, cookie=cookie, headers={"Range": "bytes=4000-"}
    )
    assert status == 206 and body == data[4000:]

    status, headers, body = file_request(vcsim, "HEAD", path, cookie=cookie)
    assert status == 200 and headers["content-length"] == "4096" and body == b""
    assert headers.get("accept-ranges") == "bytes"

    status, _, body = file_request(vcsim, "GET", path, cookie=cookie)
    assert status == 200 and body == data

    status, _, _ = file_request(vcsim, "GET", "DC0_H0_VM0/nope.vmdk", cookie=cookie)
    assert status == 404

    # vSphere answers 401 without a session cookie; vcsim serves the file anyway, so a
    # client's cookie handling is not checked by vcsim.
    status, _, body = file_request(vcsim, "GET", path, headers={"Range": "bytes=0-9"})
    assert status == 206 and body == data[:10]


def test_file_service_put_writes_into_the_datastore(si, vcsim):
    data = os.urandom(3000)
    status, _, _ = file_request(
        vcsim,
        "PUT",
        "interop-put/uploaded.bin",
        body=data,
        cookie=si._stub.cookie,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status in (200, 201)
    assert (vcsim["datastores"]["LocalDS_0"] / "interop-put" / "uploaded.bin").read_bytes() == data
