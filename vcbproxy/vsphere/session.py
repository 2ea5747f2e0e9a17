"""A logged-in vSphere session: TLS verified or pinned, timeouts on every call, faults translated.

TLS policy (never a silent unverified fallback):
- no thumbprint: the certificate must verify against the system store or ``ca_file``;
  if it does not, the error names the SHA-256 thumbprint the server presented and how
  to pin it;
- a thumbprint (SHA-1 or SHA-256, colons optional): a first handshake reads the server's
  certificate and its digest must equal the pin *before* any credentials are sent; only
  then is a context without chain verification used, and pyVmomi re-checks the pin on
  every new connection (``SoapStubAdapter(thumbprint=...)``).

The thumbprint helpers live in ``vcbproxy.tls`` (no pyVmomi, shared with the transports)
and are still importable from here.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
import urllib.parse
from http.cookies import SimpleCookie
from typing import Any

from pyVmomi import SoapAdapter, vim

from vcbproxy import errors
from vcbproxy.models import DatastorePath, ServerSpec, SnapshotRef, parse_server
from vcbproxy.tls import cert_digest, normalise_thumbprint, pretty_thumbprint
from vcbproxy.vsphere import datacenters
from vcbproxy.vsphere.faults import translate
from vcbproxy.vsphere.keepalive import KeepAlive, Relogin, login_with, session_ping
from vcbproxy.vsphere.lease import ExportLease

log = logging.getLogger(__name__)

API_VERSION = "vim.version.v8_0_3_0"  # what the lab speaks; vcsim and vSphere 7/8 accept it
IDLE_RECONNECT_SECONDS = 20


def _unverified_context() -> ssl.SSLContext:
    """A client context that checks no chain (the caller compares a pinned digest instead):
    ``create_default_context`` would load the system trust store, ~20 ms per run, for nothing."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def fetch_certificate(host: str, port: int, timeout: float) -> bytes:
    """The server's leaf certificate (DER), read without trusting it: only to compare
    digests or to tell the user which thumbprint to pin."""
    context = _unverified_context()
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise _unreachable(host, port, exc) from exc
    if not der:
        raise errors.ConnectionFailure(f"{host}:{port} presented no TLS certificate")
    return der


def _unreachable(host: str, port: int, exc: BaseException) -> errors.VcbProxyError:
    if isinstance(exc, socket.timeout | TimeoutError):
        return errors.ConnectionFailure(f"cannot reach {host}:{port}: no answer in time")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return errors.ConnectionFailure(f"cannot reach {host}:{port}: {reason}")


def _verified_context(
    host: str, port: int, ca_file: str | None, timeout: float
) -> tuple[ssl.SSLContext, bytes]:
    """A verifying context, proven against the server by one handshake so a failure says why,
    and the certificate (DER) that handshake verified."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise errors.UsageError(f"cannot load CA file {ca_file}: {exc}") from exc
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        presented = pretty_thumbprint(
            hashlib.sha256(fetch_certificate(host, port, timeout)).hexdigest()
        )
        source = f"CA file {ca_file}" if ca_file else "the system trust store"
        raise errors.ConnectionFailure(
            f"TLS certificate of {host}:{port} cannot be verified against {source} "
            f"({exc.verify_message}); its SHA-256 thumbprint is {presented}: if that is the "
            f"server's, pin it with --thumbprint {presented} or give --ca-file"
        ) from exc
    except (OSError, ssl.SSLError) as exc:
        raise _unreachable(host, port, exc) from exc
    if not der:
        raise errors.ConnectionFailure(f"{host}:{port} presented no TLS certificate")
    return context, der


def _pinned_context(host: str, port: int, pin: str, timeout: float) -> tuple[ssl.SSLContext, bytes]:
    der = fetch_certificate(host, port, timeout)
    actual = cert_digest(der, len(pin))
    if actual != pin:
        algorithm = "SHA-1" if len(pin) == 40 else "SHA-256"
        presented = pretty_thumbprint(hashlib.sha256(der).hexdigest())
        raise errors.ConnectionFailure(
            f"TLS certificate of {host}:{port} does not match the pinned {algorithm} thumbprint "
            f"{pretty_thumbprint(pin)}: it presents SHA-256 {presented}. Not connecting; if the "
            f"server's certificate really changed, pin it with --thumbprint {presented}"
        )
    # safe only because the pin was just checked (and pyVmomi checks it on every connection)
    return _unverified_context(), der


class Session:
    """A logged-in session; use :meth:`connect` and ``with`` so it logs out at the end."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        path: str,
        si,
        stub,
        ssl_context: ssl.SSLContext,
        thumbprint: str | None,
        thumbprint_sha256: str,
        timeout: float,
    ):
        self.host = host
        self.port = port
        self.path = path
        self.si = si
        self.stub = stub
        self.ssl_context = ssl_context
        self.thumbprint = thumbprint
        self.thumbprint_sha256 = thumbprint_sha256
        self.timeout = timeout
        # The ServiceInstance's content once logged in. Any: pyVmomi's stubs make every
        # property optional, and a logged-in session has them all.
        self.content: Any = None
        self._keepalive: KeepAlive | None = None

    @classmethod
    def connect(cls, opts: ServerSpec) -> Session:
        host, port, path = parse_server(opts.server)
        pin = normalise_thumbprint(opts.thumbprint)
        if pin:
            context, der = _pinned_context(host, port, pin, opts.timeout)
        else:
            context, der = _verified_context(host, port, opts.ca_file, opts.timeout)
        stub = SoapAdapter.SoapStubAdapter(
            host=host,
            port=port,
            path=path,
            version=API_VERSION,
            sslContext=context,
            thumbprint=pin,
            httpConnectionTimeout=opts.timeout,
            # A disk copy can leave the SOAP connection idle for many minutes, and servers close
            # idle connections (the lab after 60 s); reusing one fails with an SSL EOF. Never reuse
            # a pooled connection idle for longer than this.
            connectionPoolTimeout=IDLE_RECONNECT_SECONDS,
        )
        # Every call goes through Relogin: an expired session logs in again (keepalive.py).
        relogin = Relogin(
            stub, login_with(opts.user, opts.password), what=f"{host}:{port} as {opts.user}"
        )
        si = vim.ServiceInstance("ServiceInstance", relogin)
        session = cls(
            host=host,
            port=port,
            path=path,
            si=si,
            stub=relogin,
            ssl_context=context,
            thumbprint=pin,
            thumbprint_sha256=pretty_thumbprint(hashlib.sha256(der).hexdigest()),
            timeout=opts.timeout,
        )
        try:
            session.content = si.RetrieveContent()
            session.content.sessionManager.Login(opts.user, opts.password)
        except BaseException as exc:
            stub.DropConnections()
            if not isinstance(exc, Exception) or isinstance(exc, errors.VcbProxyError):
                raise  # Ctrl-C (errors.Interrupted), or already one of ours
            raise translate(
                exc, f"logging in to {host}:{port} as {opts.user}", errors.ConnectionFailure
            ) from exc
        log.info("logged in to %s:%d as %s", host, port, opts.user)
        manager = session.content.sessionManager
        session._keepalive = KeepAlive(
            relogin, session_ping(relogin, manager), opts.keepalive
        ).start()
        return session

    # -- context manager: log out on every path ---------------------------------------------
    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self.content is None:
            return
        if self._keepalive is not None:
            self._keepalive.stop()
        self.stub.closed = True  # logged out on purpose: no more logging in again
        try:
            self.content.sessionManager.Logout()
        except Exception as exc:  # noqa: BLE001 - logging out must never mask the real outcome
            log.debug("logout from %s failed: %s", self.host, exc)
        finally:
            self.content = None
            self.stub.DropConnections()

    # -- what transports use ----------------------------------------------------------------
    @property
    def cookie(self) -> str:
        """The ``Cookie`` header value for the file service: ``vmware_soap_session="..."``."""
        raw = self.stub.cookie or ""
        morsel = SimpleCookie(raw).get(SoapAdapter.COOKIE_NAME) if raw else None
        if morsel is None:
            return raw.split(";", 1)[0].strip()
        return f"{SoapAdapter.COOKIE_NAME}={morsel.coded_value}"

    @property
    def server_id(self) -> str:
        """What the server says it is, however it was spelled on the command line: vCenter's
        instance UUID, or (an ESXi host has none) its certificate's SHA-256 thumbprint."""
        about = self.content.about if self.content is not None else None
        return (getattr(about, "instanceUuid", None) or self.thumbprint_sha256).lower()

    def reauthenticate(self, refused_cookie: str) -> str:
        """The file service answered ``refused_cookie`` with 401: log in again (once, however
        many transfers saw it) and return the cookie to send now."""
        return self.stub.reauthenticate(refused_cookie, lambda: self.cookie)

    def file_url(
        self,
        file: DatastorePath,
        *,
        scheme: str = "https",
        port: int | None = None,
        datacenter: str | None = None,
    ) -> str:
        """The file service URL of ``file``; its ``dcPath`` is the inventory path of the
        datacenter holding the datastore: ``datacenter`` when the caller knows it (the VM's),
        else the only datacenter with a datastore of that name (see vsphere.datacenters)."""
        dc = datacenters.datacenter_of_datastore(self, file.datastore, datacenter=datacenter)
        return build_file_url(self.host, port or self.port, file, scheme=scheme, datacenter=dc)

    def datastore_urls(self, datacenter: str | None = None) -> dict[str, str]:
        """``{datastore name: "ds:///vmfs/volumes/<uuid>/"}`` of one datacenter's datastores
        (every datacenter's when None), for ``--san-map`` by URL."""
        return datacenters.datastore_urls(self, datacenter)

    def export_lease(self, snapshot: SnapshotRef) -> ExportLease:
        """An NFC export lease on ``snapshot``, ready (a context manager: completed or aborted)."""
        return ExportLease.for_snapshot(self, snapshot)

    def mo(self, cls, moref: str):
        """A pyVmomi managed object bound to this session (e.g. ``mo(vim.VirtualMachine, "vm-1")``)."""
        return cls(moref, self.stub)


def build_file_url(
    host: str, port: int, file: DatastorePath, *, scheme: str, datacenter: str
) -> str:
    """``https://host:port/folder/<quoted path>?dcPath=<dc>&dsName=<ds>`` (datastore file service)."""
    netloc = f"[{host}]" if ":" in host else host
    path = urllib.parse.quote(file.path.lstrip("/"), safe="/")
    query = urllib.parse.urlencode(
        {"dcPath": datacenter, "dsName": file.datastore}, quote_via=urllib.parse.quote
    )
    return f"{scheme}://{netloc}:{port}/folder/{path}?{query}"
