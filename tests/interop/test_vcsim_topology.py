"""What govmomi's vcsim shows of a real vCenter's shape, against vcbproxy.

``vcsim_topology`` runs vcsim's VPX model with two datacenters, ``DC0`` and ``F0/DC1`` (inside
a datacenter folder), each with its own datastore ``LocalDS_0``. vcsim's file service finds the
datacenter with govmomi's finder from ``dcPath`` (simulator.go, ``findDatastore``), then the
datastore by name inside it: the peer confirms that dcPath decides which of the two
``LocalDS_0`` a URL reads.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.cli import endpoint_env, run
from tests.e2e.oracle import metadata, qemu_check, qemu_compare
from tests.fixtures.endpoints import Endpoint
from vcbproxy.models import DatastorePath, ServerSpec
from vcbproxy.selectors import Selector
from vcbproxy.transport import create
from vcbproxy.vmdk.descriptor import Extent, new_descriptor, render
from vcbproxy.vsphere.datacenters import datacenters
from vcbproxy.vsphere.inventory import find_vms
from vcbproxy.vsphere.session import Session

DC1 = "F0/DC1"
DATASTORE = "LocalDS_0"
VM = "DC1_H0_VM1"
MiB = 1 << 20


def _endpoint(info: dict, datacenter: str) -> Endpoint:
    return Endpoint(
        name="vcsim",
        server=info["server"],
        user=info["user"],
        password=info["password"],
        thumbprint_sha256=info["thumbprint_sha256"],
        cert_file=info["cert_file"],
        datacenter=datacenter,
        datastores=dict(info["datacenters"][datacenter]["datastores"]),
        peer=info,
        datacenters=tuple(info["datacenters"]),
    )


def _session(info: dict) -> Session:
    return Session.connect(
        ServerSpec(
            server=info["server"],
            user=info["user"],
            password=info["password"],
            ca_file=info["cert_file"],
            timeout=20,
        )
    )


def test_datacenters_and_their_datastores_of_the_same_name(vcsim_topology):
    with _session(vcsim_topology) as session:
        known = datacenters(session)
        assert set(known.paths) == {"DC0", DC1}
        assert known.holding(DATASTORE) == ["DC0", DC1]
        [vm] = find_vms(session, Selector("name", VM))
        assert vm.datacenter == DC1
        assert vm.folder.startswith(f"/{DC1}/vm")


def test_nbdssl_reads_the_datastore_of_the_vms_datacenter(vcsim_topology):
    ep = _endpoint(vcsim_topology, DC1)
    probe = os.urandom(100_000)
    ep.write_file(DATASTORE, f"{VM}/vcbproxy-probe.bin", probe)
    other = _endpoint(vcsim_topology, "DC0")
    assert not other.path(DATASTORE, f"{VM}/vcbproxy-probe.bin").exists()
    with _session(vcsim_topology) as session:
        [vm] = find_vms(session, Selector("name", VM))
        with create("nbdssl", session=session, datacenter=vm.datacenter) as transport:
            f = transport.open(file=DatastorePath(DATASTORE, f"{VM}/vcbproxy-probe.bin"))
            assert f.pread(0, f.size) == probe
        # The same datastore name in the other datacenter is another datastore.
        url = session.file_url(
            DatastorePath(DATASTORE, f"{VM}/vcbproxy-probe.bin"), datacenter="DC0"
        )
        request = urllib.request.Request(url, headers={"Cookie": session.cookie})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, context=session.ssl_context, timeout=20)
        assert info.value.code == 404


@pytest.fixture
def dc1_vm_with_content(vcsim_topology):
    """DC1's VM with a real 1 MiB disk (vcsim's disks are configured 1024 KB, their files
    empty): descriptor, flat extent, .vmx, .nvram; put back afterwards."""
    ep = _endpoint(vcsim_topology, DC1)
    rels = [f"{VM}/{n}" for n in ("disk1.vmdk", "disk1-flat.vmdk", f"{VM}.vmx", f"{VM}.nvram")]
    saved = {rel: ep.read_file(DATASTORE, rel) for rel in rels}
    descriptor = new_descriptor(
        "vmfs", [Extent("RW", MiB // 512, "VMFS", "disk1-flat.vmdk")], capacity=MiB
    )
    ep.write_file(DATASTORE, f"{VM}/disk1.vmdk", render(descriptor).encode())
    flat = ep.write_file(DATASTORE, f"{VM}/disk1-flat.vmdk", os.urandom(MiB // 2) + bytes(MiB // 2))
    vmx = (
        f'.encoding = "UTF-8"\nconfig.version = "8"\ndisplayName = "{VM}"\n'
        f'scsi0.present = "TRUE"\nscsi0:0.present = "TRUE"\nscsi0:0.fileName = "disk1.vmdk"\n'
    )
    ep.write_file(DATASTORE, f"{VM}/{VM}.vmx", vmx.encode())
    ep.write_file(DATASTORE, f"{VM}/{VM}.nvram", os.urandom(4096))
    try:
        yield ep, flat
    finally:
        for rel, data in saved.items():
            ep.write_file(DATASTORE, rel, data)


def test_export_of_a_vm_in_a_datacenter_inside_a_folder(dc1_vm_with_content, tmp_path):
    ep, flat = dc1_vm_with_content
    env = endpoint_env(ep)
    target = tmp_path / f"{VM}-fullVM"
    res = run(env, "mount", "-a", f"name:{VM}", "-r", str(target), "-m", "nbdssl", "-q")
    assert res.code == 0, res
    meta = metadata(target)
    assert meta["vm"]["datacenter"] == DC1
    [disk] = [d for d in meta["disks"] if not d.get("skipped")]
    assert disk["content_sha256"] == hashlib.sha256(Path(flat).read_bytes()).hexdigest()
    qemu_check(target / disk["files"][0])
    qemu_compare(target / disk["files"][0], str(flat))
    assert (target / f"{VM}.vmx").is_file()
