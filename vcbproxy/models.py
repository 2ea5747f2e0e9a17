"""Plain dataclasses that cross package boundaries.

``jobs`` and ``transport`` see only these, never pyVmomi objects: the ``vsphere``
package converts at its edge. Sizes are bytes, offsets are bytes.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from vcbproxy import errors

DEFAULT_PORT = 443  # the SDK's HTTPS port


@dataclass
class ServerSpec:
    """Where and as whom to log in; built by the CLI, used by ``vsphere.session.Session.connect``."""

    server: str  # "host", "host:port" or "https://host:port/sdk"
    user: str
    password: str = field(repr=False, default="")
    thumbprint: str | None = None  # SHA-1 or SHA-256 pin, instead of CA verification
    ca_file: str | None = None
    timeout: float = 60.0
    # Seconds without a SOAP call after which the session is renewed (0: never); vCenter
    # ends sessions idle for 30 minutes by default, and a copy can be quiet that long.
    keepalive: float = 300.0

    @property
    def host(self) -> str:
        """The host part of ``server`` (what SSH mode connects to by default)."""
        return parse_server(self.server)[0]


def parse_server(server: str) -> tuple[str, int, str]:
    """ "host", "host:port", "[v6]:port" or "https://host:port/sdk" -> (host, port, path)."""
    text = (server or "").strip()
    if not text:
        raise errors.UsageError("no server given")
    if "://" not in text:
        text = "https://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme != "https":
        raise errors.UsageError(f"server {server!r}: only https is supported for the SDK")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise errors.UsageError(f"server {server!r}: bad port") from exc
    if not parts.hostname:
        raise errors.UsageError(f"server {server!r}: no host name")
    path = parts.path.rstrip("/") or "/sdk"
    return parts.hostname, port, path


@dataclass(frozen=True)
class VmRef:
    moref: str  # managed object id, e.g. "vm-42"
    name: str  # display name as the server has it (may hold '/', unicode)
    uuid: str  # BIOS uuid (config.uuid)
    instance_uuid: str = ""
    ip_address: str = ""  # guest.ipAddress; empty without VMware Tools
    power_state: str = ""  # "poweredOn" | "poweredOff" | "suspended"
    host: str = ""  # host name running the VM
    resource_pool: str = ""  # inventory path of the resource pool
    folder: str = ""  # inventory path of the VM's folder
    vmx_path: str = ""  # "[ds] dir/name.vmx"
    datacenter: str = ""  # inventory path of its datacenter: "lab-dc", "emea/lab-dc2" (dcPath)
    tools_running: bool = False


@dataclass(frozen=True)
class DatastorePath:
    """A file on a datastore: "[datastore] dir/file.vmdk"."""

    datastore: str
    path: str  # relative to the datastore root, '/' separated

    @classmethod
    def parse(cls, text: str) -> DatastorePath:
        text = text.strip()
        if not text.startswith("[") or "]" not in text:
            raise ValueError(f"not a datastore path: {text!r}")
        ds, _, rest = text[1:].partition("]")
        return cls(ds, rest.strip())

    def __str__(self) -> str:
        return f"[{self.datastore}] {self.path}"


@dataclass(frozen=True)
class DatastoreFile:
    """One file of a VM, as listed in layoutEx at a snapshot."""

    location: DatastorePath
    size: int
    kind: str  # "config" | "nvram" | "log" | "diskDescriptor" | "diskExtent" | ...
    datacenter: str = ""


@dataclass(frozen=True)
class DiskLayer:
    """One link of a disk chain: a descriptor and its extent files."""

    descriptor: DatastoreFile
    extents: tuple[DatastoreFile, ...] = ()


@dataclass(frozen=True)
class DiskInfo:
    """A virtual disk as it is at a snapshot (from the snapshot's config, not the live VM)."""

    key: int  # device key, used by QueryChangedDiskAreas
    label: str  # "Hard disk 1"
    device_id: str  # "scsi0:0"
    capacity: int  # bytes
    chain: tuple[DiskLayer, ...]  # base first, the snapshot's own layer last
    change_id: str = ""  # backing.changeId at the snapshot ("" when CBT is off)
    disk_mode: str = "persistent"
    uuid: str = ""

    @property
    def independent(self) -> bool:
        return self.disk_mode.startswith("independent")

    @property
    def top(self) -> DiskLayer:
        return self.chain[-1]


@dataclass(frozen=True)
class ChangedArea:
    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class SnapshotRef:
    moref: str
    name: str
    description: str = ""
    created: str = ""  # ISO 8601 create time
    vm_moref: str = ""
    children: tuple[SnapshotRef, ...] = field(default=())
