"""The options of each transport mode, one frozen class per concern.

Each transport receives only its own: nbd/nbdssl :class:`HttpOptions`, san :class:`SanOptions`,
ssh :class:`SshOptions`, nfc :class:`NfcOptions`. :class:`ModeOptions` carries all four to
``vcbproxy.transport.create``, which hands each mode of a chain (``san:nbdssl``) its part.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HttpOptions:
    """nbd and nbdssl: the datastore file service (also how NFC reads .vmx, .nvram, logs)."""

    timeout: float = 60.0  # seconds per connection attempt and per read
    retries: int = 5  # resume attempts of a dropped transfer
    backoff: float = 0.5  # seconds before the first resume, doubling
    nbd_port: int = 80  # the plain-HTTP file service of -m nbd


@dataclass(frozen=True)
class SanOptions:
    """san: where each datastore is visible locally."""

    # datastore name, or its "ds:///vmfs/volumes/<uuid>/" URL -> local directory
    san_map: dict[str, str] = field(default_factory=dict)

    @property
    def by_url(self) -> bool:
        """Whether some datastore is mapped by URL (the session then says which is which)."""
        return any("://" in key for key in self.san_map)


@dataclass(frozen=True)
class SshOptions:
    """ssh: the host's shell."""

    host: str | None = None  # None: the vSphere server's host
    port: int = 22
    user: str = "root"
    key: str | None = None  # private key file; else the SSH agent
    password: str | None = field(default=None, repr=False)
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    fingerprint: str | None = None  # "SHA256:..." pin instead of known_hosts
    accept_new: bool = False
    root: str = "/vmfs/volumes"  # the datastores' root on the host
    # Connections per large range. 1 by default: with 256 KiB SSH packets one paramiko
    # channel keeps up with OpenSSH, and more connections contend for the GIL (see ssh.py).
    channels: int = 1
    # How the host prints file ranges: "auto" tries a small script for the host's Python
    # (zero blocks sent as records), then dd, then tail|head; "dd" never runs a script.
    reader: str = "auto"
    timeout: float = 60.0
    retries: int = 5
    backoff: float = 0.5


@dataclass(frozen=True)
class NfcOptions:
    """nfc: the export lease's streams, and the small files it reads over nbdssl."""

    timeout: float = 60.0
    retries: int = 5
    backoff: float = 0.5

    @property
    def files(self) -> HttpOptions:
        return HttpOptions(timeout=self.timeout, retries=self.retries, backoff=self.backoff)


@dataclass(frozen=True)
class ModeOptions:
    """Every mode's options; each transport is given only its own."""

    http: HttpOptions = field(default_factory=HttpOptions)
    san: SanOptions = field(default_factory=SanOptions)
    ssh: SshOptions = field(default_factory=SshOptions)
    nfc: NfcOptions = field(default_factory=NfcOptions)
