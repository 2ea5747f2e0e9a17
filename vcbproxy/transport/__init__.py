"""Transports: every path the proxy can take to a VM's bytes, behind one interface.

``create(mode, session=..., options=...)`` builds one by name; ``parse_chain("san:nbdssl")``
turns a fallback chain into validated names, and ``create`` accepts such a chain too
(it returns a :class:`~vcbproxy.transport.fallback.FallbackTransport`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vcbproxy import errors
from vcbproxy.transport.base import RandomAccess, TransferStats, Transport

__all__ = [
    "MODES",
    "RandomAccess",
    "TransferStats",
    "Transport",
    "TransportOptions",
    "create",
    "parse_chain",
]

MODES = ("nbdssl", "nbd", "san", "ssh", "nfc", "hotadd")
WORKING_MODES = tuple(m for m in MODES if m != "hotadd")

HOTADD_REFUSAL = (
    "hotadd needs the proxy to be a VM on the same ESXi host as the VM and is not available; "
    "use one of: " + ", ".join(WORKING_MODES)
)


@dataclass
class TransportOptions:
    nbd_port: int = 80
    timeout: float = 60
    retries: int = 5
    backoff: float = 0.5
    # datastore name or "ds:///vmfs/volumes/<uuid>/" url → local directory
    san_map: dict[str, str] = field(default_factory=dict)
    ssh_host: str | None = None
    ssh_port: int = 22
    ssh_user: str = "root"
    ssh_key: str | None = None
    ssh_password: str | None = field(default=None, repr=False)
    ssh_known_hosts: str | None = None
    ssh_fingerprint: str | None = None
    ssh_accept_new: bool = False
    ssh_root: str = "/vmfs/volumes"
    # Connections per large range. 1 by default: with 256 KiB SSH packets one paramiko
    # channel keeps up with OpenSSH, and more connections contend for the GIL (see ssh.py).
    ssh_channels: int = 1
    # How the host prints file ranges: "auto" tries a small script for the host's Python
    # (zero blocks sent as records), then dd, then tail|head; "dd" never runs a script.
    ssh_reader: str = "auto"
    # datastore name → url, from the session, so san_map may be keyed by URL
    datastore_urls: dict[str, str] = field(default_factory=dict)


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


def create(mode: str, *, session, options: TransportOptions | None = None) -> Transport:
    """A transport for ``mode`` (one name, or a ``a:b`` fallback chain)."""
    options = options if options is not None else TransportOptions()
    names = parse_chain(mode)
    if len(names) > 1:
        from vcbproxy.transport.fallback import FallbackTransport

        usable = [n for n in names if n != "hotadd"]
        if not usable:
            raise errors.UnsupportedError(HOTADD_REFUSAL)
        return FallbackTransport([_create_one(n, session, options) for n in usable])
    return _create_one(names[0], session, options)


def _create_one(name: str, session, options: TransportOptions) -> Transport:
    if name == "hotadd":
        raise errors.UnsupportedError(HOTADD_REFUSAL)
    if name == "nbdssl":
        from vcbproxy.transport.https import NbdSslTransport

        return NbdSslTransport(session=session, options=options)
    if name == "nbd":
        from vcbproxy.transport.https import NbdTransport

        return NbdTransport(session=session, options=options)
    if name == "san":
        from vcbproxy.transport.san import SanTransport

        return SanTransport(session=session, options=options)
    if name == "ssh":
        from vcbproxy.transport.ssh import SshTransport

        return SshTransport(session=session, options=options)
    if name == "nfc":
        from vcbproxy.transport.nfc import NfcTransport

        return NfcTransport(session=session, options=options)
    raise errors.UsageError(f"unknown transport mode {name!r}; use one of: {', '.join(MODES)}")
