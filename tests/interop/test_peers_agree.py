"""Independent peers agree on the same bytes: vcsim's file service, OpenSSH, vcbproxy.

A VM disk file written into a datastore behind the server's back (``Endpoint.write_file``)
must come back identical through every path a proxy can take to it: the datastore file
service of the endpoint (vcbproxy's ``nbdssl`` transport) and OpenSSH's sshd exposing the
same datastore directory under a ``/vmfs/volumes``-like root (vcbproxy's ``ssh``
transport). The endpoint fixture runs the body against the lab and vcsim alike.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import urllib.parse
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from pyVim.connect import Disconnect, SmartConnect

from vcbproxy.models import DatastorePath
from vcbproxy.transport import HttpOptions, ModeOptions, create

MiB = 1 << 20


def sha(chunks) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


@pytest.fixture
def disk(vsphere_endpoint):
    """A 3 MiB + odd-sized extent with a hole-like zero run, in a fresh VM-like folder."""
    ep = vsphere_endpoint
    datastore = sorted(ep.datastores)[0]
    data = os.urandom(MiB) + bytes(MiB) + os.urandom(MiB + 517)
    rel = f"interop-peers-{os.getpid()}/disk1-flat.vmdk"
    path = ep.write_file(datastore, rel, data)
    yield SimpleNamespace(datastore=datastore, rel=rel, data=data, path=path)
    path.unlink(missing_ok=True)


def test_endpoint_write_file_lands_in_the_datastore_dir(vsphere_endpoint, disk):
    ep = vsphere_endpoint
    assert ep.read_file(disk.datastore, disk.rel) == disk.data
    assert (
        ep.path(disk.datastore, disk.rel).parent.parent == ep.datastores[disk.datastore].resolve()
    )
    with pytest.raises(ValueError, match="leaves the datastore"):
        ep.write_file(disk.datastore, "../escape.bin", b"x")


@dataclass
class FileServiceSession:
    """The attributes of vcbproxy's vSphere session that the nbdssl transport uses, filled
    from a real pyVmomi login (its session cookie) against the endpoint."""

    host: str
    port: int
    cookie: str
    ssl_context: ssl.SSLContext
    datacenter: str
    thumbprint: str | None = None

    def file_url(
        self,
        ds_path: DatastorePath,
        scheme: str = "https",
        port: int | None = None,
        datacenter: str | None = None,
    ):
        query = urllib.parse.urlencode(
            {"dcPath": datacenter or self.datacenter, "dsName": ds_path.datastore}
        )
        return (
            f"{scheme}://{self.host}:{port or self.port}/folder/"
            f"{urllib.parse.quote(ds_path.path)}?{query}"
        )


def test_nbdssl_reads_what_the_endpoint_stores(vsphere_endpoint, disk):
    ep = vsphere_endpoint
    host, port = ep.server.rsplit(":", 1)
    context = ssl.create_default_context(cafile=ep.cert_file)
    si = SmartConnect(host=host, port=int(port), user=ep.user, pwd=ep.password, sslContext=context)
    try:
        cookie = si._stub.cookie.split(";", 1)[0]
        session = FileServiceSession(
            host=host,
            port=int(port),
            cookie=cookie,
            ssl_context=context,
            datacenter=ep.datacenter,
            thumbprint=ep.thumbprint_sha256,
        )
        options = ModeOptions(http=HttpOptions(retries=2, backoff=0.05, timeout=20))
        with create("nbdssl", session=session, options=options) as t:
            f = t.open(file=DatastorePath(disk.datastore, disk.rel))
            assert f.size == len(disk.data)
            assert sha(f.stream(0, f.size)) == hashlib.sha256(disk.data).hexdigest()
            assert f.pread(2 * MiB + 1, 4096) == disk.data[2 * MiB + 1 : 2 * MiB + 4097]
    finally:
        Disconnect(si)


def test_ssh_over_openssh_reads_what_the_endpoint_stores(vsphere_endpoint, disk, sshd):
    ep = vsphere_endpoint
    sshd.expose(disk.datastore, ep.datastores[disk.datastore])
    with create("ssh", session=None, options=sshd.options(retries=2)) as t:
        f = t.open(file=DatastorePath(disk.datastore, disk.rel))
        assert f.size == len(disk.data)
        assert sha(f.stream(0, f.size)) == hashlib.sha256(disk.data).hexdigest()
        assert f.pread(MiB - 3, 10) == disk.data[MiB - 3 : MiB + 7]
