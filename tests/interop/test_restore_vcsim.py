"""``vcbproxy restore`` of a network-mode export, one test body against the lab and vcsim.

Export a VM whose disk content is known (``source_vm``, see test_export_any_endpoint.py),
restore it under a new name onto another datastore where the endpoint has one (the lab),
else the same one (vcsim has only ``LocalDS_0``), then check what vSphere promises:

- the VM is registered under the new name (``vcbproxy vms -s name:NEW``);
- the folder holds a ``vmware.log`` (vcsim's RegisterVM refuses a folder without one);
- every disk the restored ``.vmx`` names is on the datastore as a VMFS descriptor + flat
  extent whose content equals the export's (``qemu-img compare`` against the export, the
  flat extent's sha256 against the export's recorded ``content_sha256``).

vcsim does not read the uploaded ``.vmx`` when registering (the new VM gets vcsim's default
devices), so the disk check goes to the datastore files, never to the registered config.
Restored VMs and their folders are removed afterwards: both peers are shared by the session.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess

import pytest

from tests.e2e.cli import endpoint_env, run
from tests.e2e.oracle import metadata
from tests.interop.test_export_any_endpoint import (  # noqa: F401 - source_vm is a fixture
    sha256_file,
    source_vm,
)
from vcbproxy.models import DatastorePath
from vcbproxy.staging.vmx import parse_vmx
from vcbproxy.vmdk.descriptor import parse as parse_descriptor

MiB = 1 << 20


def vm_morefs(env: dict, name: str) -> list[str]:
    res = run(env, "vms", "-s", f"name:{name}")
    if res.code == 11:
        return []
    assert res.code == 0, res
    return [
        line.split(":", 1)[1].strip() for line in res.out.splitlines() if line.startswith("moref:")
    ]


def destroy_named(ep, name: str) -> None:
    """Destroy every VM called ``name`` through vcbproxy's own vSphere layer."""
    from vcbproxy.jobs.connection import connect
    from vcbproxy.models import ServerSpec
    from vcbproxy.selectors import Selector
    from vcbproxy.vsphere.inventory import find_vms
    from vcbproxy.vsphere.register import destroy_vm

    with connect(
        ServerSpec(
            server=ep.server, user=ep.user, password=ep.password, thumbprint=ep.thumbprint_sha256
        )
    ) as session:
        for vm in find_vms(session, Selector("name", name)):
            destroy_vm(session, vm.moref)


@pytest.fixture
def restored(vsphere_endpoint):
    """Names the test restores, each destroyed and its datastore folder removed afterwards
    (behind the server's back: a failed restore may leave files nobody registered)."""
    made: list[tuple[str, str]] = []  # (datastore, name)
    yield made
    for datastore, name in made:
        with contextlib.suppress(Exception):
            destroy_named(vsphere_endpoint, name)
        shutil.rmtree(vsphere_endpoint.path(datastore, name), ignore_errors=True)


def other_datastore(ep, source_datastore: str) -> str:
    """Another datastore of the endpoint if it has one, else the source's own."""
    others = sorted(set(ep.datastores) - {source_datastore})
    return others[0] if others else source_datastore


def test_restore_registers_the_vm_and_uploads_every_disk(
    vsphere_endpoint,
    source_vm,  # noqa: F811
    restored,
    tmp_path,
):
    ep = vsphere_endpoint
    env = endpoint_env(ep)
    export = tmp_path / "export"
    res = run(env, "mount", "-a", f"moref:{source_vm.moref}", "-r", str(export), "-q", timeout=120)
    assert res.code == 0, res
    meta = metadata(export)
    disks = [d for d in meta["disks"] if not d.get("skipped")]
    assert disks

    name = f"{source_vm.name}-restored"
    datastore = other_datastore(ep, DatastorePath.parse(meta["vm"]["vmx_path"]).datastore)
    restored.append((datastore, name))
    res = run(
        env,
        "restore",
        "-s",
        str(export),
        "--name",
        name,
        "--datastore",
        datastore,
        "-q",
        timeout=120,
    )
    assert "Traceback" not in res.err
    assert res.code == 0, res
    assert len(vm_morefs(env, name)) == 1

    folder = ep.path(datastore, name)
    assert (folder / "vmware.log").is_file()
    vmx = parse_vmx((folder / f"{name}.vmx").read_text())
    assert vmx["displayname"] == name
    for disk in disks:
        descriptor = folder / vmx[f"{disk['device']}.filename"]
        parsed = parse_descriptor(descriptor.read_text())
        assert parsed.create_type == "vmfs" and [e.type for e in parsed.extents] == ["VMFS"]
        flat = folder / parsed.extents[0].filename
        assert flat.stat().st_size == disk["capacity"], disk["device"]
        assert sha256_file(flat) == disk["content_sha256"], disk["device"]
        proc = subprocess.run(
            [
                "qemu-img",
                "compare",
                "-f",
                "vmdk",
                "-F",
                "vmdk",
                str(descriptor),
                str(export / disk["files"][0]),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not [p.name for p in folder.iterdir() if p.name.endswith((".partial", ".labupload"))]
