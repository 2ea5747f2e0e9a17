"""What the lab puts on the wire and does, where vSphere's documentation says what it must
(issue 15). The govmomi battery (tests/interop/test_govmomi_battery.py) checks the same
through an independent client; these tests pin the details with raw HTTP and pyVmomi.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from pyVmomi import vim, vmodl

from tests.fixtures.lab import connect, find_vm, run_task
from vcblab.client import LabClient

PC = vmodl.query.PropertyCollector
ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    "<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
)
RETRIEVE_SC = (
    '<RetrieveServiceContent xmlns="urn:vim25">'
    '<_this type="ServiceInstance">ServiceInstance</_this></RetrieveServiceContent>'
)


def _https(info) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=info["cert_file"])
    return http.client.HTTPSConnection("127.0.0.1", info["https_port"], context=ctx, timeout=30)


def _post_chunked(info, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    conn = _https(info)
    try:
        conn.putrequest("POST", "/sdk")
        conn.putheader("Content-Type", 'text/xml; charset="utf-8"')
        conn.putheader("Transfer-Encoding", "chunked")
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        for i in range(0, len(body), 50):  # many small chunks, as a streaming writer sends
            piece = body[i : i + 50]
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# -- SOAP framing and types ----------------------------------------------------------------


def test_chunked_soap_request_is_answered(lab):
    status, body = _post_chunked(lab.info, ENVELOPE.format(body=RETRIEVE_SC).encode())
    assert status == 200
    assert b'<rootFolder type="Folder">group-d1</rootFolder>' in body


def test_soap_request_without_any_framing_is_411(lab):
    conn = _https(lab.info)
    try:
        conn.putrequest("POST", "/sdk")
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 411
        resp.read()
    finally:
        conn.close()


def _retrieve_raw(info, cookie: str, obj: str, obj_type: str, path: str) -> bytes:
    body = (
        '<RetrieveProperties xmlns="urn:vim25">'
        '<_this type="PropertyCollector">propertyCollector</_this>'
        f"<specSet><propSet><type>{obj_type}</type><pathSet>{path}</pathSet></propSet>"
        f'<objectSet><obj type="{obj_type}">{obj}</obj></objectSet></specSet>'
        "</RetrieveProperties>"
    )
    status, data = _post_chunked(info, ENVELOPE.format(body=body).encode(), {"Cookie": cookie})
    assert status == 200, data
    return data


def test_references_and_enums_in_anytype_carry_vsphere_type_names(lab):
    cookie = LabClient(lab.info).login()
    parent = _retrieve_raw(lab.info, cookie, "group-v3", "Folder", "parent")
    assert b'xsi:type="ManagedObjectReference" type="Datacenter">datacenter-2<' in parent
    si = connect(lab)
    vm = find_vm(si, "web01")
    state = _retrieve_raw(lab.info, cookie, vm._moId, "VirtualMachine", "runtime.powerState")
    assert b'xsi:type="VirtualMachinePowerState">poweredOn<' in state
    capacity = _retrieve_raw(lab.info, cookie, "datastore-20", "Datastore", "summary.capacity")
    assert b'xsi:type="xsd:long"' in capacity


def test_empty_retrieve_properties_is_an_empty_answer(lab_si):
    content = lab_si.RetrieveContent()
    view = content.viewManager.CreateContainerView(
        content.rootFolder.childEntity[0].datastoreFolder, [vim.VirtualMachine], True
    )
    try:
        spec = PC.FilterSpec(
            objectSet=[
                PC.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[PC.TraversalSpec(path="view", type=vim.view.ContainerView)],
                )
            ],
            propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=["name"])],
        )
        pc = content.propertyCollector
        assert pc.RetrieveContents([spec]) == []
        assert pc.RetrievePropertiesEx([spec], PC.RetrieveOptions()) is None
    finally:
        view.DestroyView()


# -- collectors ----------------------------------------------------------------------------


def test_created_collector_sees_only_its_filters_and_can_be_destroyed(lab):
    si = connect(lab)
    pc = si.content.propertyCollector
    mine = pc.CreatePropertyCollector()
    vm = find_vm(si, "files01")
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=vm)],
        propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=["name"])],
    )
    mine.CreateFilter(spec, partialUpdates=False)
    update = mine.WaitForUpdatesEx("", PC.WaitOptions(maxWaitSeconds=5))
    assert [o.obj._moId for f in update.filterSet for o in f.objectSet] == [vm._moId]
    # The default collector has no filter of this session: nothing to report.
    assert pc.WaitForUpdatesEx("", PC.WaitOptions(maxWaitSeconds=0)) is None
    other = connect(lab)  # another session does not see this session's collector
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        vim.PropertyCollector(mine._moId, other._stub).WaitForUpdatesEx(
            "", PC.WaitOptions(maxWaitSeconds=0)
        )
    mine.DestroyPropertyCollector()
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        mine.WaitForUpdatesEx("", PC.WaitOptions(maxWaitSeconds=0))


# -- sessions ------------------------------------------------------------------------------


def test_session_records_user_agent_and_terminate_session(lab):
    si = connect(lab)
    me = si.content.sessionManager.currentSession
    assert me.userAgent.startswith("pyvmomi")  # what pyVmomi sent as User-Agent
    other = connect(lab)
    key = other.content.sessionManager.currentSession.key
    sm = si.content.sessionManager
    with pytest.raises(vmodl.fault.InvalidArgument):
        sm.TerminateSession([me.key])
    with pytest.raises(vim.fault.NotFound):
        sm.TerminateSession(["no-such-session"])
    sm.TerminateSession([key])
    with pytest.raises(vim.fault.NotAuthenticated):
        other.content.sessionManager.currentSession  # noqa: B018 - the read is the test


# -- /folder -------------------------------------------------------------------------------


def _folder_get(info, rel: str, dc: str, headers: dict) -> tuple[int, dict, bytes]:
    conn = _https(info)
    try:
        conn.request(
            "GET",
            f"/folder/{quote(rel)}?dcPath={quote(dc, safe='')}&dsName=datastore1",
            headers=headers,
        )
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_folder_dc_path_with_leading_slash_and_basic_credentials(lab):
    info, rel = lab.info, "web01/web01.nvram"
    data = Path(info["datastores"]["datastore1"], rel).read_bytes()
    cookie = {"Cookie": LabClient(info).login()}
    for dc in ("lab-dc", "/lab-dc", "/lab-dc/"):
        assert _folder_get(info, rel, dc, cookie)[2] == data, dc
    assert _folder_get(info, rel, "/other-dc", cookie)[0] == 404
    status, headers, _ = _folder_get(info, rel, "/lab-dc", {})
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    good = base64.b64encode(f"{info['user']}:{lab.password}".encode()).decode()
    bad = base64.b64encode(f"{info['user']}:wrong".encode()).decode()
    assert _folder_get(info, rel, "/lab-dc", {"Authorization": f"Basic {good}"})[2] == data
    assert _folder_get(info, rel, "/lab-dc", {"Authorization": f"Basic {bad}"})[0] == 401


def test_folder_put_chunked(lab):
    info = lab.info
    cookie = LabClient(info).login()
    payload = bytes(range(256)) * 1000
    conn = _https(info)
    try:
        conn.putrequest("PUT", "/folder/wire-test/chunked.bin?dcPath=%2Flab-dc&dsName=datastore2")
        conn.putheader("Cookie", cookie)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for i in range(0, len(payload), 7000):
            piece = payload[i : i + 7000]
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 201
    finally:
        conn.close()
    target = Path(info["datastores"]["datastore2"], "wire-test", "chunked.bin")
    assert target.read_bytes() == payload
    target.unlink()  # the shared lab as found


# -- reconfigure and CBT -------------------------------------------------------------------


def _disk(config, key=2000):
    return next(d for d in config.hardware.device if d.key == key)


def _extra(config) -> dict:
    return {o.key: o.value for o in config.extraConfig}


def test_reconfigure_honours_annotation_memory_and_extra_config(fresh_lab):
    si = connect(fresh_lab)
    vm = find_vm(si, "files01")  # powered off: memory may change
    spec = vim.vm.ConfigSpec(
        annotation="backed up by the battery",
        memoryMB=2048,
        extraConfig=[vim.option.OptionValue(key="guestinfo.backup", value="yes")],
    )
    run_task(vm.ReconfigVM_Task(spec))
    cfg = vm.config
    assert cfg.annotation == "backed up by the battery" and cfg.hardware.memoryMB == 2048
    assert _extra(cfg)["guestinfo.backup"] == "yes"
    text = Path(fresh_lab.info["datastores"]["datastore2"], "files01", "files01.vmx").read_text()
    assert 'memSize = "2048"' in text and 'guestinfo.backup = "yes"' in text
    run_task(
        vm.ReconfigVM_Task(
            vim.vm.ConfigSpec(
                extraConfig=[vim.option.OptionValue(key="guestinfo.backup", value="")]
            )
        )
    )
    assert "guestinfo.backup" not in _extra(vm.config)
    running = find_vm(si, "web01")
    with pytest.raises(vim.fault.InvalidPowerState):
        run_task(running.ReconfigVM_Task(vim.vm.ConfigSpec(memoryMB=4096)))


def test_cbt_by_extra_config_starts_at_the_stun_of_a_running_vm(fresh_lab):
    si = connect(fresh_lab)
    vm = find_vm(si, "web01")
    run_task(
        vm.ReconfigVM_Task(
            vim.vm.ConfigSpec(
                extraConfig=[
                    vim.option.OptionValue(key="ctkEnabled", value="TRUE"),
                    vim.option.OptionValue(key="scsi0:0.ctkEnabled", value="TRUE"),
                    vim.option.OptionValue(key="scsi0:1.ctkEnabled", value="FALSE"),
                ]
            )
        )
    )
    cfg = vm.config
    assert cfg.changeTrackingEnabled is True
    assert _extra(cfg)["scsi0:1.ctkEnabled"] == "FALSE"
    assert _disk(cfg).backing.changeId is None  # not before a stun/unstun
    snap = run_task(vm.CreateSnapshot_Task("stun", None, False, False))
    assert _disk(snap.config).backing.changeId.endswith("/0")
    assert _disk(snap.config, 2001).backing.changeId is None  # scsi0:1 left out
    assert _disk(vm.config).backing.changeId
    run_task(snap.RemoveSnapshot_Task(removeChildren=False))


def test_cbt_on_a_powered_off_vm_and_queries_without_snapshot(fresh_lab):
    si = connect(fresh_lab)
    vm = find_vm(si, "files01")
    run_task(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=True)))
    change_id = _disk(vm.config).backing.changeId
    assert change_id  # powered off: no stun needed
    capacity = _disk(vm.config).capacityInBytes
    info = vm.QueryChangedDiskAreas(None, 2000, 0, "*")
    assert info.startOffset == 0 and info.length == capacity and info.changedArea
    assert vm.QueryChangedDiskAreas(None, 2000, 0, change_id).changedArea == []
    run_task(vm.PowerOnVM_Task())
    with pytest.raises(vmodl.fault.InvalidArgument) as err:
        vm.QueryChangedDiskAreas(None, 2000, 0, "*")
    assert err.value.invalidProperty == "snapshot"
    run_task(vm.PowerOffVM_Task())


# -- export leases -------------------------------------------------------------------------


def _wait_ready(lease):
    deadline = time.monotonic() + 30
    while lease.state != "ready":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_export_lease_holds_the_vm_and_leaves_disk_sizes_out(fresh_lab):
    si = connect(fresh_lab)
    vm = find_vm(si, "files01")
    lease = vm.ExportVm()
    _wait_ready(lease)
    assert all(u.disk and not u.fileSize for u in lease.info.deviceUrl)
    tasks = [t for t in si.content.taskManager.recentTask if t.info.descriptionId.endswith("LRO")]
    assert [t.info.state for t in tasks] == ["running"]
    with pytest.raises(vim.fault.TaskInProgress) as err:
        vm.PowerOnVM_Task()
    assert err.value.task._moId == tasks[0]._moId
    with pytest.raises(vim.fault.TaskInProgress):
        vm.UnregisterVM()
    lease.HttpNfcLeaseProgress(50)
    assert tasks[0].info.progress == 50
    lease.HttpNfcLeaseComplete()
    assert tasks[0].info.state == "success"
    run_task(vm.PowerOnVM_Task())  # free again
    run_task(vm.PowerOffVM_Task())


# -- inventory additions -------------------------------------------------------------------


def test_browser_host_pool_network_and_managers(lab_si):
    content = lab_si.RetrieveContent()
    ds = content.rootFolder.childEntity[0].datastore[0]
    task = ds.browser.SearchDatastore_Task(
        f"[{ds.name}] web01",
        vim.host.DatastoreBrowser.SearchSpec(
            query=[vim.host.DatastoreBrowser.VmDiskQuery()],
            details=vim.host.DatastoreBrowser.FileInfo.Details(fileType=True, fileSize=True),
        ),
    )
    result = run_task(task)
    assert [f.path for f in result.file] == ["web01.vmdk"]  # the extent is no disk
    assert isinstance(result.file[0], vim.host.DatastoreBrowser.VmDiskInfo)
    with pytest.raises(vim.fault.FileNotFound):
        run_task(ds.browser.SearchDatastore_Task(f"[{ds.name}] no-such-folder", None))
    vm = find_vm(lab_si, "web01")
    host = vm.runtime.host
    assert host.summary.config.product.productLineId == "embeddedEsx"
    assert host.summary.quickStats.overallMemoryUsage > 0
    assert vm.resourcePool.runtime.overallStatus == "green"
    assert vm.resourcePool.config.cpuAllocation.limit == -1
    assert [n.name for n in vm.network] == ["VM Network"]
    nic = next(
        d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)
    )
    assert nic.backing.network == vm.network[0]
    assert content.ovfManager is not None and content.eventManager is not None


def test_events_and_history_collectors(fresh_lab):
    si = connect(fresh_lab)
    vm = find_vm(si, "files01")
    run_task(vm.PowerOnVM_Task())
    run_task(vm.PowerOffVM_Task())
    em = si.content.eventManager
    spec = vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self"),
        eventTypeId=["VmEvent"],  # a base type matches its subclasses
    )
    events = em.QueryEvents(spec)
    assert [type(e).__name__ for e in events][:2] == [
        "vim.event.VmPoweredOffEvent",
        "vim.event.VmPoweredOnEvent",
    ]  # newest first
    assert all(e.vm.vm == vm for e in events)
    collector = em.CreateCollectorForEvents(
        vim.event.EventFilterSpec(
            entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self")
        )
    )
    collector.RewindCollector()
    oldest_first = collector.ReadNextEvents(100)
    assert [e.key for e in oldest_first] == sorted(e.key for e in oldest_first)
    assert collector.ReadNextEvents(100) == []
    collector.DestroyCollector()
    tasks = si.content.taskManager.CreateCollectorForTasks(
        vim.TaskFilterSpec(
            entity=vim.TaskFilterSpec.ByEntity(entity=vm, recursion="self"), state=["success"]
        )
    )
    page = tasks.latestPage
    assert [t.descriptionId for t in page] == [
        "VirtualMachine.powerOff",
        "VirtualMachine.powerOn",
    ]
    tasks.DestroyCollector()
