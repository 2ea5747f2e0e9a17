"""NFC export lease URLs of the lab, driven by plain pyVmomi (ExportVm / ExportSnapshot).

The streamed disks are checked by an independent reader: qemu-img converts them to raw and
the result must hash to what the lab's oracle says the disk held at the lease's snapshot.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from tests.e2e.oracle import raw_sha256
from tests.fixtures.lab import connect, find_vm
from vcblab.client import LabClient

VM = "web01"  # powered on: exported through a snapshot
VM_OFF = "files01"  # powered off: ExportVm
needs_qemu = pytest.mark.usefixtures("qemu_img")


@pytest.fixture
def client(lab):
    c = LabClient(lab.info)
    yield c
    c.reset_faults()


@pytest.fixture
def vm(si):
    """A powered-off VM: ExportVm refuses running ones, as vSphere does."""
    return find_vm(si, VM_OFF)


def cookie_of(si) -> str:
    return si._stub.cookie


def wait_ready(lease) -> None:
    deadline = time.monotonic() + 10
    while lease.state == vim.HttpNfcLease.State.initializing:
        assert time.monotonic() < deadline, "lease never became ready"
        time.sleep(0.05)
    assert lease.state == vim.HttpNfcLease.State.ready, lease.error


def disk_urls(lease) -> dict[str, str]:
    """{path of the URL: URL} of the lease's disks, '*' standing for the host."""
    return {urlsplit(d.url).path: d.url for d in lease.info.deviceUrl if d.disk}


def get(
    info: dict, path: str, cookie: str | None, port: str = "https", out: Path | None = None
) -> tuple[int, dict]:
    if port == "http":
        conn = http.client.HTTPConnection("127.0.0.1", info["http_port"], timeout=60)
    else:
        conn = http.client.HTTPSConnection(
            "127.0.0.1",
            info["https_port"],
            timeout=60,
            context=ssl.create_default_context(cafile=info["cert_file"]),
        )
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        resp = conn.getresponse()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if out is None or resp.status != 200:
            resp.read()
            return resp.status, headers
        with open(out, "wb") as f:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
        return resp.status, headers
    finally:
        conn.close()


def key_of(path: str) -> int:
    return int(path.rsplit("/", 1)[1].split(".")[0])


@needs_qemu
@pytest.mark.parametrize("port", ["https", "http"])
def test_export_vm_streams_every_disk_as_stream_optimized(lab, client, si, vm, tmp_path, port):
    lease = vm.ExportVm()
    wait_ready(lease)
    try:
        urls = disk_urls(lease)
        disks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
        assert sorted(key_of(p) for p in urls) == sorted(d.key for d in disks)
        expected = {key_of(p): client.oracle(vm=VM_OFF, key=key_of(p)) for p in urls}
        for path in urls:
            out = tmp_path / f"{key_of(path)}.vmdk"
            status, headers = get(lab.info, path, cookie_of(si), port, out)
            assert status == 200
            assert headers["content-type"] == "application/x-vnd.vmware-streamVmdk"
            assert headers.get("transfer-encoding") == "chunked"
            info = json.loads(
                subprocess.run(
                    ["qemu-img", "info", "--output=json", str(out)],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            assert info["format"] == "vmdk"
            assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
            assert raw_sha256(out, tmp_path) == expected[key_of(path)]["sha256"]
            lease.HttpNfcLeaseProgress(50)
        lease.HttpNfcLeaseComplete()
    except BaseException:
        lease.HttpNfcLeaseAbort()
        raise


@needs_qemu
def test_export_snapshot_streams_the_frozen_content(fresh_lab, tmp_path):
    # A lab of its own: snapshots and guest writes would change what other tests see.
    lab, client = fresh_lab, LabClient(fresh_lab.info)
    si = connect(lab)
    vm = find_vm(si, VM)
    WaitForTask(vm.CreateSnapshot_Task(name="nfc-test", memory=False, quiesce=False))
    snap = vm.snapshot.currentSnapshot
    try:
        lease = snap.ExportSnapshot()
        wait_ready(lease)
        path = next(iter(disk_urls(lease)))
        key = key_of(path)
        frozen = client.oracle(snapshot=snap._moId, key=key)
        client.churn(VM, 3, seed=11)  # the guest keeps writing during the export
        assert client.oracle(vm=VM, key=key)["sha256"] != frozen["sha256"]
        out = tmp_path / "snap.vmdk"
        assert get(lab.info, path, cookie_of(si), out=out)[0] == 200
        assert raw_sha256(out, tmp_path) == frozen["sha256"]
        lease.HttpNfcLeaseComplete()
    finally:
        WaitForTask(snap.RemoveSnapshot_Task(removeChildren=False))


def test_lease_urls_refuse_what_vsphere_refuses(lab, si, vm):
    cookie = cookie_of(si)
    lease = vm.ExportVm()
    wait_ready(lease)
    path = next(iter(disk_urls(lease)))
    lease_id = path.split("/")[2]
    assert get(lab.info, path, None)[0] == 401
    assert get(lab.info, f"/nfc/{lease_id}/424242.vmdk", cookie)[0] == 404
    assert get(lab.info, "/nfc/no-such-lease/2000.vmdk", cookie)[0] == 404
    lease.HttpNfcLeaseAbort()
    assert get(lab.info, path, cookie)[0] == 410

    lease = vm.ExportVm()
    wait_ready(lease)
    path = next(iter(disk_urls(lease)))
    lease.HttpNfcLeaseComplete()
    assert get(lab.info, path, cookie)[0] == 410


def test_lease_without_progress_times_out(lab, client, si, vm):
    client.set_faults(lease_timeout=0.5)
    lease = vm.ExportVm()
    wait_ready(lease)
    path = next(iter(disk_urls(lease)))
    time.sleep(1.0)
    assert get(lab.info, path, cookie_of(si))[0] == 410


def test_drop_fault_breaks_the_stream(lab, client, si, vm, tmp_path):
    lease = vm.ExportVm()
    wait_ready(lease)
    try:
        path = next(iter(disk_urls(lease)))
        client.set_faults(drop_after_bytes=30_000, drop_count=1)
        with pytest.raises(http.client.IncompleteRead):
            get(lab.info, path, cookie_of(si), out=tmp_path / "broken.vmdk")
        assert get(lab.info, path, cookie_of(si), out=tmp_path / "ok.vmdk")[0] == 200
    finally:
        lease.HttpNfcLeaseAbort()
