"""The lab's control API (churn, faults, oracle, state) through LabClient, over real sockets.

Snapshots are taken with plain pyVmomi, as a backup proxy would; the oracle's answers are
checked against the files on disk and against qemu-img reading the lab's VMDK chains.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from tests.fixtures.lab import connect, find_vm
from vcblab.client import LabClient
from vcblab.faults import SWITCHES
from vcbproxy import errors

VM = "web01"


@pytest.fixture
def client(lab):
    c = LabClient(lab.info)
    yield c
    c.reset_faults()


def disk_keys(vm) -> list[int]:
    return [d.key for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_faults_get_and_set(client):
    faults = client.faults()
    assert faults["drop_after_bytes"] is None and faults["throttle_bps"] is None
    updated = client.set_faults(throttle_bps="1000000", drop_after_bytes=5)
    assert updated["throttle_bps"] == 1_000_000 and updated["drop_after_bytes"] == 5
    assert client.faults() == updated
    with pytest.raises(errors.UsageError, match="unknown fault switch"):
        client.set_faults(no_such_switch=1)
    with pytest.raises(errors.UsageError, match="is not a int"):
        client.set_faults(throttle_bps="fast")


def test_reset_faults_restores_every_default(client):
    defaults = {name: default for name, (_, default) in SWITCHES.items()}
    client.set_faults(
        drop_after_bytes=5,
        drop_count=3,
        throttle_bps=1000,
        lease_timeout=1,
        task_delay=0.5,
        cbt_max_areas=7,
    )
    assert client.reset_faults() == defaults
    assert client.faults() == defaults


def test_authentication(lab, client):
    info = dict(lab.info, password="wrong", password_file=None)
    with pytest.raises(errors.AuthError):
        LabClient(info).faults()
    conn = http.client.HTTPConnection("127.0.0.1", lab.info["http_port"], timeout=10)
    conn.request("GET", "/lab/faults")
    assert conn.getresponse().status == 401
    conn.close()
    # The SOAP session cookie is accepted too (tests that are logged in need no token).
    conn = http.client.HTTPConnection("127.0.0.1", lab.info["http_port"], timeout=10)
    conn.request("GET", "/lab/faults", headers={"Cookie": client.login()})
    resp = conn.getresponse()
    assert resp.status == 200 and "throttle_bps" in json.loads(resp.read())
    conn.close()


def test_control_api_on_the_https_port(lab):
    info = lab.info
    conn = http.client.HTTPSConnection(
        "127.0.0.1",
        info["https_port"],
        timeout=10,
        context=ssl.create_default_context(cafile=info["cert_file"]),
    )
    token = Path(info["password_file"]).read_text().strip()
    conn.request("GET", "/lab/faults", headers={"Authorization": f"Bearer {token}"})
    assert conn.getresponse().status == 200
    conn.close()


def test_unknown_vm_disk_snapshot_and_endpoint(client):
    with pytest.raises(errors.NotFoundError, match="no VM"):
        client.churn("no-such-vm", 1)
    with pytest.raises(errors.NotFoundError, match="device key"):
        client.oracle(vm=VM, key=999999)
    with pytest.raises(errors.NotFoundError, match="snapshot"):
        client.oracle(snapshot="snapshot-0", key=2000)
    with pytest.raises(errors.UsageError):
        client.oracle(key=2000)
    with pytest.raises(errors.UsageError, match="percent"):
        client.churn(VM, 250)
    with pytest.raises(errors.NotFoundError, match="no control endpoint"):
        client._call("GET", "/lab/nothing")


def test_unreachable_lab_is_a_connection_failure(lab):
    info = dict(lab.info, http_url="http://127.0.0.1:9")
    with pytest.raises(errors.ConnectionFailure):
        LabClient(info).faults()


def test_churn_changes_current_content_not_the_snapshot(fresh_lab, tmp_path):
    # A lab of its own: snapshots and guest writes would change what other tests see.
    lab, client, si = fresh_lab, LabClient(fresh_lab.info), connect(fresh_lab)
    vm = find_vm(si, VM)
    key = disk_keys(vm)[0]
    WaitForTask(vm.CreateSnapshot_Task(name="oracle-test", memory=False, quiesce=False))
    snap = vm.snapshot.currentSnapshot
    moref = snap._moId
    try:
        at_snapshot = client.oracle(snapshot=moref, key=key)
        assert at_snapshot == client.oracle(vm=VM, key=key)
        result = client.churn(VM, 2, seed=7)
        assert result["bytes"] > 0 and str(key) in result["disks"]
        assert result["bytes"] == sum(result["disks"].values())
        now = client.oracle(vm=VM, key=key)
        assert now["sha256"] != at_snapshot["sha256"]
        assert client.oracle(snapshot=moref, key=key) == at_snapshot

        # The raw image is the content the oracle hashes ...
        raw = client.oracle(snapshot=moref, key=key, raw=True)
        assert raw["sha256"] == at_snapshot["sha256"]
        assert Path(raw["path"]).stat().st_size == at_snapshot["size"]
        assert sha256_file(Path(raw["path"])) == at_snapshot["sha256"]

        # ... and qemu-img, reading the disk chain the snapshot froze, agrees.
        if shutil.which("qemu-img"):
            state = client.state(VM)
            assert moref in [s["moref"] if isinstance(s, dict) else s for s in state["snapshots"]]
            backing = vm.snapshot.currentSnapshot.config.hardware.device
            frozen = next(d for d in backing if d.key == key).backing.fileName
            ds, rel = frozen[1:].split("] ", 1)
            out = tmp_path / "frozen.raw"
            subprocess.run(
                [
                    "qemu-img",
                    "convert",
                    "-O",
                    "raw",
                    str(Path(lab.info["datastores"][ds]) / rel),
                    str(out),
                ],
                check=True,
            )
            assert sha256_file(out) == at_snapshot["sha256"]
    finally:
        WaitForTask(snap.RemoveSnapshot_Task(removeChildren=False))


def test_state_lists_snapshots_and_disks(client, si):
    vm = find_vm(si, VM)
    state = client.state(VM)
    assert state["moref"] == vm._moId and state["name"] == VM
    assert sorted(int(k) for k in state["disks"]) == sorted(disk_keys(vm))
    for key, disk in state["disks"].items():
        layers = {
            d.key: d.backing.fileName
            for d in vm.config.hardware.device
            if isinstance(d, vim.vm.device.VirtualDisk)
        }
        assert layers[int(key)].endswith("/" + disk["layers"][-1])  # the running top
        assert set(disk["layers"]) <= set(disk["files"])
        assert disk["cbt"]["enabled"] in (True, False)
    assert client.state(vm._moId)["name"] == VM
