"""Network-mode export and unmount, one test body against every vSphere endpoint.

``vcbproxy mount`` (nbdssl, the datastore file service) runs as a real CLI process against
the lab and against govmomi's vcsim; every exported disk must equal the source byte for byte
(the export's own sha256, qemu-img reading the export back, ``qemu-img compare`` against a
raw image of the source), ``qemu-img check`` must pass, no ``_VCB-BACKUP_`` snapshot may be
left, and ``unmount`` must remove the export and be a no-op the second time.

What the source disk is depends on the peer, so only the *setup* differs (``source_vm``):

- lab: web01 as the lab holds it; the lab's oracle gives the raw disk at the export's snapshot.
- vcsim: its VM files are empty, so the fixture writes a real VMFS descriptor, a sparse flat
  extent (random data, zero runs, holes, a size that is no multiple of a 64 KiB grain), a
  .vmx and an .nvram into a VM's datastore folder, and grows the VM's configured disk to the
  same size (vcsim's disks are 1 MiB); everything is put back afterwards, because the vcsim
  is shared by the session. vcsim makes no delta disk: the snapshot leaves the base disk as
  it is, which is what the export then reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.cli import endpoint_env, run
from tests.e2e.oracle import metadata, qemu_check, qemu_compare, raw_sha256
from vcbproxy.vmdk.descriptor import Extent, new_descriptor, render

KiB, MiB = 1 << 10, 1 << 20
FORMATS = ["2gbsparse", "flat"]
VCSIM_VM = "DC0_C0_RP0_VM1"  # vcsim's other tests pick VM0s and H0_VM1 by name
VCSIM_DISK_BYTES = 4099 * KiB  # vcsim sets capacityInKB: a KiB multiple, not a grain one


@dataclass
class SourceVm:
    """A VM whose disk content is known; ``raw_of(meta, disk)`` is a raw image of ``disk``
    (an entry of vcbproxy.json's ``disks``) as it was at the export's snapshot."""

    moref: str
    name: str
    raw_of: Callable[[dict, dict], Path]
    cleanup: list[Callable[[], None]] = field(default_factory=list)


def vm_by_name(env: dict, name: str) -> dict:
    res = run(env, "vms", "-s", f"name:{name}", "--json")
    assert res.code == 0, res
    [vm] = json.loads(res.out)
    return vm


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MiB), b""):
            digest.update(block)
    return digest.hexdigest()


# --- setup per peer ------------------------------------------------------------------------


def _lab_source(ep, env) -> SourceVm:
    from vcblab.client import LabClient

    client = LabClient(ep.peer.info)
    vm = vm_by_name(env, "web01")

    def raw_of(meta: dict, disk: dict) -> Path:
        truth = client.oracle(snapshot=meta["snapshot"]["moref"], key=disk["key"], raw=True)
        return Path(truth["path"])

    return SourceVm(vm["moref"], vm["name"], raw_of)


def set_disk_capacity_kb(ep, vm_name: str, kb: int) -> int:
    """Resize the VM's only disk as a vSphere client would (ReconfigVM_Task, edit); returns
    the size it had. Test-side pyVmomi: vcbproxy has no resize command."""
    from pyVim.connect import Disconnect, SmartConnect
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    host, port = ep.server.rsplit(":", 1)
    si = SmartConnect(
        host=host,
        port=int(port),
        user=ep.user,
        pwd=ep.password,
        sslContext=ssl.create_default_context(cafile=ep.cert_file),
    )
    try:
        content = si.RetrieveContent()
        vm = content.searchIndex.FindByInventoryPath(f"{ep.datacenter}/vm/{vm_name}")
        [disk] = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
        before = disk.capacityInKB
        disk.capacityInKB = kb
        WaitForTask(
            vm.ReconfigVM_Task(
                spec=vim.vm.ConfigSpec(
                    deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)]
                )
            )
        )
        return before
    finally:
        Disconnect(si)


def write_vm_files(ep, datastore: str, name: str, capacity: int) -> Path:
    """A descriptor + sparse flat extent + .vmx + .nvram in ``[datastore] name/`` (vcsim's
    file names); returns the flat extent, which is the raw disk itself."""
    descriptor = new_descriptor(
        "vmfs", [Extent("RW", capacity // 512, "VMFS", "disk1-flat.vmdk")], capacity=capacity
    )
    ep.write_file(datastore, f"{name}/disk1.vmdk", render(descriptor).encode())
    flat = ep.write_file(datastore, f"{name}/disk1-flat.vmdk", b"")
    with open(flat, "r+b") as f:
        f.truncate(capacity)  # holes: never written
        f.write(os.urandom(MiB + 100))  # data ending mid-sector
        f.seek(MiB + 64 * KiB)
        f.write(bytes(64 * KiB))  # written zeros: data, not a hole
        f.seek(2 * MiB + 4 * KiB)
        f.write(os.urandom(MiB))
        f.seek(capacity - 1536)
        f.write(os.urandom(1536))  # the tail past the last full grain
    vmx = (
        f'.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "13"\n'
        f'displayName = "{name}"\nguestOS = "otherGuest64"\nscsi0.present = "TRUE"\n'
        f'scsi0.virtualDev = "lsilogic"\nscsi0:0.present = "TRUE"\n'
        f'scsi0:0.fileName = "disk1.vmdk"\n'
    )
    ep.write_file(datastore, f"{name}/{name}.vmx", vmx.encode())
    ep.write_file(datastore, f"{name}/{name}.nvram", os.urandom(8684))
    return flat


def _vcsim_source(ep, env) -> SourceVm:
    datastore = sorted(ep.datastores)[0]
    vm = vm_by_name(env, VCSIM_VM)
    rels = [
        f"{VCSIM_VM}/{f}"
        for f in ("disk1.vmdk", "disk1-flat.vmdk", f"{VCSIM_VM}.vmx", f"{VCSIM_VM}.nvram")
    ]
    saved = {rel: ep.read_file(datastore, rel) for rel in rels}
    flat = ep.path(datastore, f"{VCSIM_VM}/disk1-flat.vmdk")
    source = SourceVm(vm["moref"], vm["name"], raw_of=lambda meta, disk: flat)
    source.cleanup.append(lambda: [ep.write_file(datastore, r, b) for r, b in saved.items()])
    before_kb = set_disk_capacity_kb(ep, VCSIM_VM, VCSIM_DISK_BYTES // KiB)
    source.cleanup.append(lambda: set_disk_capacity_kb(ep, VCSIM_VM, before_kb))
    write_vm_files(ep, datastore, VCSIM_VM, VCSIM_DISK_BYTES)
    return source


SOURCES = {"lab": _lab_source, "vcsim": _vcsim_source}


@pytest.fixture
def source_vm(vsphere_endpoint):
    """How known bytes get into a VM is peer-specific setup, chosen here; the test body
    below is the same for every endpoint."""
    env = endpoint_env(vsphere_endpoint)
    source = SOURCES[vsphere_endpoint.name](vsphere_endpoint, env)
    try:
        yield source
    finally:
        for undo in reversed(source.cleanup):
            undo()


def assert_export_equals_source(directory: Path, source: SourceVm, scratch: Path) -> dict:
    meta = metadata(directory)
    disks = [d for d in meta["disks"] if not d.get("skipped")]
    assert disks, "the export holds no disk"
    for disk in disks:
        raw = source.raw_of(meta, disk)
        truth = sha256_file(raw)
        assert disk["capacity"] == raw.stat().st_size, disk["device"]
        assert disk["content_sha256"] == truth, disk["device"]
        descriptor = directory / disk["files"][0]
        assert raw_sha256(descriptor, scratch) == truth, disk["device"]
        qemu_check(descriptor)
        qemu_compare(descriptor, str(raw))
    return meta


# --- the body ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_mount_exports_every_disk_byte_for_byte_then_unmount_twice(
    vsphere_endpoint, source_vm, tmp_path, fmt
):
    env = endpoint_env(vsphere_endpoint)
    target = tmp_path / f"{source_vm.name}-fullVM"
    res = run(
        env,
        "mount",
        "-a",
        f"moref:{source_vm.moref}",
        "-r",
        str(target),
        "--format",
        fmt,
        "-q",
        timeout=120,
    )
    assert res.code == 0, res
    assert "Traceback" not in res.err

    meta = assert_export_equals_source(target, source_vm, tmp_path)
    assert meta["format_written"] == fmt
    assert meta["transport"]["mode"] == "nbdssl"
    names = {p.name for p in target.iterdir()}
    assert {f"{source_vm.name}.vmx", "MANIFEST.sha256", "vcbproxy.json", "catalog"} <= names, names
    assert not [n for n in names if n.endswith(".partial")]
    vmx = (target / f"{source_vm.name}.vmx").read_text()
    for disk in meta["disks"]:
        assert f'"{disk["files"][0]}"' in vmx  # the staged .vmx names the exported disks

    # The export's snapshot is gone (vcsim: its removal task's info.entity is the snapshot,
    # which vcbproxy's task wait has to cope with).
    listed = run(env, "snapshot", "list", "-a", f"moref:{source_vm.moref}", "--json")
    assert listed.code == 0, listed
    assert "_VCB-BACKUP_" not in [s["name"] for s in json.loads(listed.out)]

    res = run(env, "unmount", "-r", str(target))
    assert res.code == 0, res
    assert not target.exists()
    again = run(env, "unmount", "-r", str(target))
    assert again.code == 0, again
    assert "Traceback" not in again.err
