"""Keeping one logged-in vSphere session valid for as long as a job needs it.

vCenter and ESXi end a session that has been idle for a while (30 minutes by default), and a
long export can be idle that long: in ``san`` and ``ssh`` modes no SOAP call is made while
the disks are copied, and a ``/folder`` read is authenticated only when its request starts.
Two measures, the ones govmomi takes (``session/keepalive``, ``session.Manager``):

* **keep-alive**: once no SOAP call has been made for ``interval`` seconds, a background
  thread reads ``SessionManager.currentSession``, which renews the session on the server
  (govmomi sends ``CurrentTime``; reading the session also tells whether it is still valid,
  and logs in again at once if not);
* **transparent re-login**: a call answered ``NotAuthenticated`` (the session expired all
  the same, or the server restarted) logs in again with the same credentials and is sent
  once more; a ``/folder`` or NFC request answered 401 does the same through
  :meth:`Relogin.reauthenticate` (``Session.reauthenticate``).

``NotAuthenticated`` is the one fault retried here, because the server refused the call
before doing anything: resending ``CreateSnapshot_Task`` after a dropped connection could make
two snapshots, resending it after ``NotAuthenticated`` cannot. If the credentials no longer
work, the call fails with :class:`errors.AuthError` (exit 10) naming the login that failed.

This module owns the stub wrapper and the thread; ``session.py`` only wires them in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pyVmomi import vim
from pyVmomi.SoapAdapter import StubAdapterBase

from vcbproxy import errors
from vcbproxy.vsphere.faults import translate

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 300.0  # seconds without a SOAP call before the keep-alive renews the session
# Methods after whose NotAuthenticated logging in again would be wrong or pointless.
_NO_RELOGIN = {"Login", "Logout", "LoginByToken", "LoginExtensionByCertificate"}


class Relogin(StubAdapterBase):
    """A pyVmomi stub adapter around the SOAP stub that logs in again on ``NotAuthenticated``.

    Managed objects bound to it (``vim.VirtualMachine(moref, relogin)``) send every method
    call and property read through :meth:`InvokeMethod`; objects in answers are bound to it
    too (pyVmomi's ``outerStub``), so nothing slips past. Everything else (``cookie``,
    ``DropConnections``, ...) is the SOAP stub's.
    """

    def __init__(self, soap_stub, login: Callable[[Any], None], *, what: str):
        StubAdapterBase.__init__(self, version=soap_stub.version)
        self.soapStub = soap_stub
        self._login = login  # logs ``soap_stub`` in; raises a pyVmomi fault if refused
        self._what = what  # "host:port as user", for messages
        self._lock = threading.Lock()
        self.generation = 0  # logins so far after the first; a request notes it before sending
        self.last_call = time.monotonic()
        self.closed = False

    def __getattr__(self, name: str):
        # Only for what this class lacks: the SOAP stub's cookie, connections, pool, ...
        soap_stub = self.__dict__.get("soapStub")
        if soap_stub is None:  # still in __init__ (pyVmomi's base probes attributes)
            raise AttributeError(name)
        return getattr(soap_stub, name)

    def InvokeMethod(self, mo, info, args):  # noqa: N802 - pyVmomi's stub interface
        retried = False
        while True:
            generation = self.generation
            status, obj = self.soapStub.InvokeMethod(mo, info, args, self)
            self.last_call = time.monotonic()
            if status == 200:
                return obj
            if (
                isinstance(obj, vim.fault.NotAuthenticated)
                and not retried
                and not self.closed
                and info.wsdlName not in _NO_RELOGIN
            ):
                log.info("the session was no longer valid (%s): logging in again", info.wsdlName)
                self.relogin(generation)
                retried = True
                continue
            raise obj

    def relogin(self, generation: int) -> None:
        """Log in again, unless another thread did since ``generation`` was read (its
        request then failed with the old session, and the new one serves it)."""
        with self._lock:
            if generation != self.generation:
                return
            # Without the old cookie: the server opens a new session instead of judging the
            # old one (vCenter refuses Login on a session that is still logged in).
            self.soapStub.cookie = ""
            try:
                self._login(self.soapStub)
            except Exception as exc:
                if not isinstance(exc, errors.VcbProxyError):
                    exc = translate(
                        exc,
                        f"the session expired and logging in again to {self._what} failed",
                        errors.AuthError,
                    )
                raise exc from None
            self.generation += 1
            self.last_call = time.monotonic()
            log.info("logged in again to %s", self._what)

    def reauthenticate(self, refused_cookie: str, current: Callable[[], str]) -> str:
        """After ``refused_cookie`` was answered 401: log in again unless someone already
        did; the cookie to use now (``current()`` reads it)."""
        generation = self.generation
        if current() != refused_cookie:
            return current()
        log.info("the file service refused the session cookie: logging in again")
        self.relogin(generation)
        return current()


class KeepAlive:
    """A daemon thread renewing the session through ``stub`` once it has been idle for
    ``interval`` seconds; :meth:`stop` ends it (before logging out)."""

    def __init__(self, stub: Relogin, ping: Callable[[], None], interval: float):
        self.stub = stub
        self.ping = ping
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> KeepAlive:
        if self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="vsphere-keepalive", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            idle = time.monotonic() - self.stub.last_call
            if self._stop.wait(max(0.05, self.interval - idle)):
                return
            if time.monotonic() - self.stub.last_call < self.interval:
                continue  # a call was made meanwhile: that renewed the session
            try:
                self.ping()
                log.debug("session renewed after %.0f s without a call", self.interval)
            except BaseException as exc:  # noqa: BLE001 - the next real call reports it
                self.stub.last_call = time.monotonic()  # do not spin on a dead server
                log.warning("renewing the session failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None


def login_with(user: str, password: str) -> Callable[[Any], None]:
    """A ``login`` for :class:`Relogin`: ``SessionManager.Login`` on the bare SOAP stub."""

    def login(soap_stub) -> None:
        # Any: pyVmomi's stubs make every property optional; a service content has them all.
        content: Any = vim.ServiceInstance("ServiceInstance", soap_stub).RetrieveContent()
        content.sessionManager.Login(user, password)

    return login


def session_ping(stub: Relogin, manager) -> Callable[[], None]:
    """The keep-alive's request: read ``manager.currentSession`` (``manager`` bound to
    ``stub``). Any authenticated call renews the session; vCenter answers this one with
    nothing when the session is gone (no fault), so an empty answer logs in again here
    rather than at the job's next call."""

    def ping() -> None:
        generation = stub.generation
        if manager.currentSession is None:
            stub.relogin(generation)

    return ping
