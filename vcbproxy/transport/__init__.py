"""Transports: every path the proxy can take to a VM's bytes, behind one interface.

``create(mode, session=..., options=...)`` builds one by name; ``parse_chain("san:nbdssl")``
turns a fallback chain into validated names, and ``create`` accepts such a chain too
(it returns a :class:`~vcbproxy.transport.fallback.FallbackTransport`).
"""

from __future__ import annotations

from dataclasses import replace

from vcbproxy import errors
from vcbproxy.transport.base import RandomAccess, Session, TransferStats, Transport
from vcbproxy.transport.fallback import FallbackTransport
from vcbproxy.transport.https import NbdSslTransport, NbdTransport
from vcbproxy.transport.nfc import NfcTransport
from vcbproxy.transport.options import (
    HttpOptions,
    ModeOptions,
    NfcOptions,
    SanOptions,
    SshOptions,
)
from vcbproxy.transport.san import SanTransport

__all__ = [
    "MODES",
    "HttpOptions",
    "ModeOptions",
    "NfcOptions",
    "RandomAccess",
    "SanOptions",
    "Session",
    "SshOptions",
    "TransferStats",
    "Transport",
    "create",
    "parse_chain",
]

MODES = ("nbdssl", "nbd", "san", "ssh", "nfc", "hotadd")
WORKING_MODES = tuple(m for m in MODES if m != "hotadd")

HOTADD_REFUSAL = (
    "hotadd needs the proxy to be a VM on the same ESXi host as the VM and is not available; "
    "use one of: " + ", ".join(WORKING_MODES)
)


def parse_chain(spec: str) -> list[str]:
    """``"san:nbdssl"`` → ``["san", "nbdssl"]``; unknown or repeated names are usage errors."""
    names = [part.strip().lower() for part in (spec or "").split(":")]
    if not names or any(not n for n in names):
        raise errors.UsageError(f"empty transport mode in {spec!r}; use one of: {', '.join(MODES)}")
    for name in names:
        if name not in MODES:
            raise errors.UsageError(
                f"unknown transport mode {name!r}; use one of: {', '.join(MODES)}"
            )
    if len(set(names)) != len(names):
        raise errors.UsageError(f"transport mode repeated in {spec!r}")
    return names


def create(
    mode: str,
    *,
    session: Session | None,
    options: ModeOptions | None = None,
    datacenter: str | None = None,
) -> Transport:
    """A transport for ``mode`` (one name, or a ``a:b`` fallback chain); each mode gets its
    own part of ``options``. Only san and ssh (with ``options.ssh.host``) work without a session.

    ``datacenter`` is the inventory path of the datacenter whose datastores the transport
    reads (the VM's): a datastore name means one datastore only inside its datacenter."""
    options = options if options is not None else ModeOptions()
    names = parse_chain(mode)
    if len(names) > 1:
        usable = [n for n in names if n != "hotadd"]
        if not usable:
            raise errors.UnsupportedError(HOTADD_REFUSAL)
        return FallbackTransport([_create_one(n, session, options, datacenter) for n in usable])
    return _create_one(names[0], session, options, datacenter)


def _create_one(
    name: str, session: Session | None, options: ModeOptions, datacenter: str | None
) -> Transport:
    if name == "hotadd":
        raise errors.UnsupportedError(HOTADD_REFUSAL)
    if name == "san":
        # Datastores mapped by URL: the server says which datastore has which URL.
        urls = (
            session.datastore_urls(datacenter) if session is not None and options.san.by_url else {}
        )
        return SanTransport(options=options.san, datastore_urls=urls)
    if name == "ssh":
        # paramiko (and the invoke it imports) costs ~0.15 s to load: only for -m ssh.
        from vcbproxy.transport.ssh import SshTransport

        ssh = options.ssh
        if ssh.host is None and session is not None:
            ssh = replace(ssh, host=session.host)
        return SshTransport(options=ssh)
    if name not in ("nbdssl", "nbd", "nfc"):
        raise errors.UsageError(f"unknown transport mode {name!r}; use one of: {', '.join(MODES)}")
    if session is None:
        raise errors.UsageError(f"-m {name} reads through the server: it needs a session")
    if name == "nbdssl":
        return NbdSslTransport(session=session, options=options.http, datacenter=datacenter)
    if name == "nbd":
        return NbdTransport(session=session, options=options.http, datacenter=datacenter)
    return NfcTransport(session=session, options=options.nfc, datacenter=datacenter)
