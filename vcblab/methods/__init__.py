"""SOAP method implementations, one module per managed object type, and their dispatcher.

A handler is registered with @method("WsdlName") and called as fn(call, this, **args), where
`this` is the LabObject the request names and `args` are the pyVmomi-typed parameters. It
returns a pyVmomi value or raises a vmodl.MethodFault, which the client sees as-is.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from vcblab.model import Lab, Session, session_key_from_cookie

HANDLERS: dict[str, Callable] = {}
# Methods a client calls before it has a session.
NO_SESSION = {"RetrieveServiceContent", "Login", "CurrentTime"}
_MODULES = (
    "service",
    "properties",
    "search",
    "vm",
    "snapshot",
    "lease",
    "task",
    "folder",
    "entity",
    "files",
    "history",
    "browser",
    "ovf",
)
_loaded = False


@dataclass(frozen=True)
class Client:
    """Who sent a request: its address and its User-Agent header (a session records both)."""

    address: str = ""
    user_agent: str = ""


@dataclass
class Call:
    lab: Lab
    session: Session | None
    new_cookie: str | None = None
    client: Client = Client()


def method(*names: str):
    def register(fn):
        for name in names:
            HANDLERS[name] = fn
        return fn

    return register


def _load() -> None:
    global _loaded
    if not _loaded:
        for name in _MODULES:
            importlib.import_module(f"{__name__}.{name}")
        _loaded = True


def dispatch(
    lab: Lab, request, cookie_header: str | None, client: Client | None = None
) -> tuple[Any, str | None]:
    _load()
    handler = HANDLERS.get(request.method)
    if handler is None:
        raise vmodl.fault.NotImplemented(msg=f"the lab does not implement {request.method}")
    session = lab.session(session_key_from_cookie(cookie_header))
    if session is None and request.method not in NO_SESSION:
        raise vim.fault.NotAuthenticated(
            msg="The session is not authenticated.", object=request.this, privilegeId="System.View"
        )
    moref = getattr(request.this, "_moId", None)
    this = lab.obj(moref) if moref else None
    if this is None:
        raise vmodl.fault.ManagedObjectNotFound(
            msg=f"The object '{moref}' has already been deleted or has not been completely created",
            obj=request.this,
        )
    call = Call(lab=lab, session=session, client=client or Client())
    lab.caller.session = session
    result = handler(call, this, **request.args)
    return result, call.new_cookie
