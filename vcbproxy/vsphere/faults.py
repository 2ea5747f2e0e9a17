"""Translating pyVmomi faults and socket errors into vcbproxy errors, in one place."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl

from pyVmomi import vim, vmodl

from vcbproxy import errors


def fault_message(fault: BaseException) -> str:
    """The most useful text a fault carries (vSphere fills msg; faultMessage on some)."""
    msg = getattr(fault, "msg", None) or getattr(fault, "localizedMessage", None)
    if not msg:
        for item in getattr(fault, "faultMessage", None) or []:
            msg = getattr(item, "message", None)
            if msg:
                break
    name = type(fault).__name__
    return f"{msg} ({name})" if msg else name


def translate(
    exc: BaseException, what: str, error: type[errors.VcbProxyError]
) -> errors.VcbProxyError:
    """The vcbproxy error for ``exc`` raised while doing ``what``; ``error`` is the caller's
    class for faults that are not about the session or the connection."""
    if isinstance(exc, errors.VcbProxyError):
        return exc
    if isinstance(exc, vim.fault.NotAuthenticated):
        return errors.AuthError(f"{what}: session expired or not logged in; log in again")
    if isinstance(exc, vim.fault.InvalidLogin):
        return errors.AuthError(f"{what}: login refused: wrong user name or password")
    if isinstance(exc, vim.fault.NoPermission):
        return errors.AuthError(f"{what}: permission denied: {fault_message(exc)}")
    if isinstance(exc, vmodl.fault.ManagedObjectNotFound):
        return errors.NotFoundError(f"{what}: object no longer exists: {fault_message(exc)}")
    if isinstance(
        exc, vmodl.fault.MethodNotFound | vmodl.fault.NotSupported | vmodl.fault.NotImplemented
    ):
        return errors.UnsupportedError(
            f"{what}: the server does not support this: {fault_message(exc)}"
        )
    if isinstance(exc, socket.timeout | TimeoutError):
        return errors.ConnectionFailure(f"{what}: the server did not answer in time")
    if isinstance(exc, ssl.SSLError):
        return errors.ConnectionFailure(f"{what}: TLS failure: {exc}")
    if isinstance(exc, OSError | http.client.HTTPException):
        return errors.ConnectionFailure(f"{what}: connection to the server failed: {exc}")
    if isinstance(exc, vmodl.MethodFault):
        return error(f"{what} failed: {fault_message(exc)}")
    return error(f"{what} failed: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def translated(what: str, error: type[errors.VcbProxyError] = errors.VcbProxyError):
    """``with translated("taking a snapshot", errors.SnapshotError): ...``"""
    try:
        yield
    except errors.VcbProxyError:
        raise
    except (vmodl.MethodFault, OSError, http.client.HTTPException) as exc:
        raise translate(exc, what, error) from exc
