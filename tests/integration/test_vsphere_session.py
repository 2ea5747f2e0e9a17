"""Session against a real endpoint (lab and vcsim, same bodies): TLS verified, pinned or
refused, credentials refused, cookie usable on the file service, logout on exit."""

from __future__ import annotations

import hashlib
import ssl
import urllib.request
import uuid

import pytest

from vcbproxy import errors
from vcbproxy.models import DatastorePath, ServerSpec
from vcbproxy.vsphere.datacenters import datacenter_of_datastore
from vcbproxy.vsphere.session import Session

pytestmark = pytest.mark.timeout(120)


def options(ep, **overrides) -> ServerSpec:
    values = dict(
        server=ep.server,
        user=ep.user,
        password=ep.password,
        thumbprint=None,
        ca_file=ep.cert_file,
        timeout=20.0,
    )
    values.update(overrides)
    return ServerSpec(**values)


def _sha1_of(ep) -> str:
    host, port = ep.server.rsplit(":", 1)
    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((host, int(port))))
    return hashlib.sha1(der).hexdigest()  # noqa: S324 - the pin format vSphere shows


def test_connect_with_ca_file_exposes_what_transports_use(vsphere_endpoint):
    ep = vsphere_endpoint
    with Session.connect(options(ep)) as session:
        assert session.host == ep.server.rsplit(":", 1)[0]
        assert session.port == int(ep.server.rsplit(":", 1)[1])
        assert session.thumbprint is None
        assert session.ssl_context.verify_mode == ssl.CERT_REQUIRED
        assert (
            session.thumbprint_sha256.replace(":", "")
            == ep.thumbprint_sha256.replace(":", "").upper()
        )
        # dcPath of a datastore: the inventory path of the datacenter that holds it.
        datastore = sorted(ep.datastores)[0]
        assert datacenter_of_datastore(session, datastore, datacenter=ep.datacenter) == (
            ep.datacenter
        )
        assert session.cookie.startswith("vmware_soap_session=")
        assert session.content.about.apiType in ("VirtualCenter", "HostAgent")


def test_pinned_sha256_and_sha1_thumbprints_connect(vsphere_endpoint):
    ep = vsphere_endpoint
    for pin in (ep.thumbprint_sha256, ep.thumbprint_sha256.replace(":", "").lower(), _sha1_of(ep)):
        with Session.connect(options(ep, ca_file=None, thumbprint=pin)) as session:
            assert session.thumbprint == pin.replace(":", "").lower()
            assert session.ssl_context.verify_mode == ssl.CERT_NONE
            # A call that needs the login: the root folder's children are only shown to a session.
            assert session.content.rootFolder.childEntity


def test_unverifiable_certificate_is_refused_naming_the_thumbprint(vsphere_endpoint):
    ep = vsphere_endpoint
    with pytest.raises(errors.ConnectionFailure) as info:
        Session.connect(options(ep, ca_file=None))
    assert info.value.exit_code == errors.CONNECTION
    assert ep.thumbprint_sha256.upper() in str(info.value)
    assert "--thumbprint" in str(info.value)


def test_wrong_pin_is_refused_before_login(vsphere_endpoint):
    ep = vsphere_endpoint
    with pytest.raises(errors.ConnectionFailure) as info:
        Session.connect(options(ep, ca_file=None, thumbprint="AB" * 32))
    assert ep.thumbprint_sha256.upper() in str(info.value)
    assert "does not match" in str(info.value)


def test_wrong_password_is_auth_error(vsphere_endpoint):
    with pytest.raises(errors.AuthError) as info:
        Session.connect(options(vsphere_endpoint, password="not-the-password"))
    assert info.value.exit_code == errors.AUTH
    assert "not-the-password" not in str(info.value)


def test_unreachable_server_is_connection_error():
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago and nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(errors.ConnectionFailure, match="cannot reach"):
        Session.connect(ServerSpec(server=f"127.0.0.1:{port}", user="u", password="p", timeout=5))


def test_logout_on_exit_invalidates_the_cookie(vsphere_endpoint):
    ep = vsphere_endpoint
    from pyVmomi import vim

    with Session.connect(options(ep)) as session:
        content = session.content
        assert content.rootFolder.childEntity
    assert session.content is None
    with pytest.raises(vim.fault.NotAuthenticated):
        content.rootFolder.childEntity  # noqa: B018 - the call is the check


def test_cookie_reads_a_datastore_file(vsphere_endpoint):
    """The cookie and file_url are what the nbdssl transport uses: one GET proves both."""
    ep = vsphere_endpoint
    datastore = sorted(ep.datastores)[0]
    ep.write_file(datastore, "vcbproxy-session-test/probe.bin", b"probe bytes")
    with Session.connect(options(ep)) as session:
        url = session.file_url(
            DatastorePath(datastore, "vcbproxy-session-test/probe.bin"), datacenter=ep.datacenter
        )
        request = urllib.request.Request(url, headers={"Cookie": session.cookie})
        with urllib.request.urlopen(request, context=session.ssl_context, timeout=20) as response:
            assert response.read() == b"probe bytes"


def test_a_session_ended_behind_our_back_is_logged_in_again(vsphere_endpoint):
    """A session the server forgot (expired, or logged out elsewhere) logs in again with the
    same credentials, and the call that met NotAuthenticated goes through: on vcsim as on
    the lab."""
    from vcbproxy.selectors import Selector
    from vcbproxy.vsphere.inventory import find_vms

    with Session.connect(options(vsphere_endpoint)) as session:
        session.content.sessionManager.Logout()  # the server ends it behind our back
        refused = session.cookie
        assert find_vms(session, Selector("any"))
        assert session.cookie != refused
        assert session.content.sessionManager.currentSession is not None


def test_a_file_service_401_logs_in_again_once_for_every_transfer(vsphere_endpoint):
    """Several transfers that met the same refused cookie log in again once between them."""
    with Session.connect(options(vsphere_endpoint)) as session:
        refused = session.cookie
        session.content.sessionManager.Logout()
        renewed = session.reauthenticate(refused)
        assert renewed != refused
        assert session.reauthenticate(refused) == renewed  # someone already logged in again
        assert session.content.sessionManager.currentSession is not None


def test_credentials_refused_when_logging_in_again_is_auth_error(fresh_lab):
    """A password changed since the job started: exit 10, saying that logging in again failed."""
    from vcblab.client import LabClient
    from vcbproxy.selectors import Selector
    from vcbproxy.vsphere.inventory import find_vms

    info = fresh_lab.info
    spec = ServerSpec(
        server=f"127.0.0.1:{info['https_port']}",
        user=info["user"],
        password=fresh_lab.password,
        ca_file=info["cert_file"],
        timeout=20.0,
    )
    with Session.connect(spec) as session:
        LabClient(info).set_faults(reject_logins=True, expire_sessions=True)
        with pytest.raises(errors.AuthError, match="logging in again .* failed: login refused"):
            find_vms(session, Selector("any"))


def test_the_server_is_known_by_its_instance_uuid_however_it_is_spelled(vsphere_endpoint):
    """Per-VM locks are keyed by what the server says it is (AboutInfo.instanceUuid), so a
    job naming it "localhost" and one naming it "127.0.0.1" meet on the same lock."""
    ep = vsphere_endpoint
    port = ep.server.rsplit(":", 1)[1]
    ids = []
    for host in ("127.0.0.1", "localhost"):
        spec = options(ep, server=f"{host}:{port}", thumbprint=ep.thumbprint_sha256, ca_file=None)
        with Session.connect(spec) as session:
            ids.append(session.server_id)
    assert ids[0] == ids[1] == str(uuid.UUID(ids[0]))
