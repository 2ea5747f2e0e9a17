"""The lab's state: managed objects, sessions, snapshot history and NFC leases.

This is the interface the HTTP side modules (fileservice, nfc, control) use:

    lab.lock                          RLock guarding every mutation of the inventory and disks
    lab.faults                        faults.Faults switch board
    lab.bucket                        faults.TokenBucket every transfer is paced by
    lab.host_bucket(name)             faults.TokenBucket of one host's link (host_throttle_bps)
    lab.readers                       readers.Readers: concurrent readers per datastore, host
    lab.root                          Path of the lab's state
    lab.password / lab.password_file  the lab user's password (and the 0600 file holding it)
    lab.session_for_cookie(header)    -> Session | None (valid, not expired; touched)
    lab.datacenters                   every Datacenter (.path, .datastores {name: Datastore},
                                         .hosts, .clusters); lab.datacenter is the first
    lab.datastore_dir(dc_path, ds)    -> Path | None (a datastore name means something only
                                         inside its datacenter)
    lab.find_datastore(name, dc)      -> Datastore (in ``dc``, else the only one of that name)
    lab.datastores                    {datastore name: Path} of the first datacenter
    lab.datastore_kinds               {datastore name: "vmfs5" | "vmfs6" | "nfs"} (same)
    lab.delta_format(datastore, cap)  createType of the snapshot deltas ESXi writes there
    lab.find_vm(name_or_moref)        -> LabVm | None
    LabVm.moref/.name/.disks/.powered_on   disks: {device key: LabDisk}
    lab.snapshot_history[snapshot moref] -> {"vm": vm moref, "marks": {key: mark},
                                             "change_ids": {key: change id}}
    lab.leases[lease id]              -> LeaseState (.disks {key: (LabDisk, mark)}, .touch(),
                                         .state "ready"|"done"|"error", .expired())

Managed objects are plain Python objects (LabObject subclasses) whose properties are computed
as real pyVmomi data objects when the property collector asks for them.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any

from pyVmomi import vim

from vcblab.events import EventLog
from vcblab.faults import Faults, TokenBucket
from vcblab.readers import Readers

COOKIE_NAME = "vmware_soap_session"
USER = "administrator@vsphere.local"


class LabObject:
    """A managed object: a moref, its pyVmomi type, and properties computed on demand.

    A property `x` is served by a method `p_x()` if there is one, else from `self.static`.
    """

    vim_type: Any = vim.ManagedObject

    def __init__(self, lab: Lab, moref: str):
        self.lab = lab
        self.moref = moref
        self.static: dict[str, Any] = {}

    def ref(self):
        return self.vim_type(self.moref)

    def get(self, name: str) -> Any:
        fn = getattr(self, "p_" + name, None)
        return fn() if fn is not None else self.static.get(name)

    def property_names(self) -> list[str]:
        names = set(self.static)
        names.update(n[2:] for n in dir(type(self)) if n.startswith("p_"))
        return sorted(names)


@dataclass
class Session:
    key: str
    user: str
    login_time: float
    last_active: float
    user_agent: str = ""  # the User-Agent of the Login request, as vSphere records it
    ip_address: str = ""
    collectors: dict = field(default_factory=dict)  # collector moref -> its filters (properties)
    retrievals: dict = field(default_factory=dict)  # paging token -> remaining contents
    logged_out: bool = False

    def user_session(self):
        t = _dt(self.login_time)
        return vim.UserSession(
            key=self.key,
            userName=self.user,
            fullName="Lab Administrator",
            loginTime=t,
            lastActiveTime=_dt(self.last_active),
            locale="en",
            messageLocale="en",
            extensionSession=False,
            ipAddress=self.ip_address or "127.0.0.1",
            userAgent=self.user_agent,
            callCount=0,
        )


@dataclass
class LeaseState:
    """One NFC export lease; nfc.py serves `.disks` while the state is "ready".

    `task` is the vCenter task that holds the VM while the lease lives (ExportVm's
    "VirtualMachine.ExportVmLRO"); it ends with the lease: success on complete, the lease's
    error on abort or timeout.
    """

    id: str
    vm_moref: str
    disks: dict  # device key -> (LabDisk, mark)
    timeout: float
    state: str = "ready"
    progress: int = 0
    error: Any = None
    task: Any = None
    last_touch: float = field(default_factory=time.monotonic)

    def touch(self) -> None:
        self.last_touch = time.monotonic()

    def set_progress(self, percent: int) -> None:
        self.touch()
        self.progress = percent
        if self.task is not None:
            self.task.set_progress(percent)

    def end(self, state: str, error: Any = None) -> None:
        """ready -> done | error, once; the lease's task ends with it."""
        if self.state != "ready":
            return
        self.state, self.error = state, error
        if self.task is not None:
            self.task.finish(error=error if state == "error" else None)

    def expired(self) -> bool:
        if self.state == "ready" and time.monotonic() - self.last_touch > self.timeout:
            self.end(
                "error",
                vim.fault.Timedout(
                    msg="Operation timed out: the export lease got no progress call in time"
                ),
            )
        return self.state == "error" and isinstance(self.error, vim.fault.Timedout)

    def finished(self) -> bool:
        self.expired()
        return self.state != "ready"


def _dt(ts: float):
    import datetime

    return datetime.datetime.fromtimestamp(ts, datetime.UTC)


class Lab:
    """All state of one lab server. Build with inventory.build_lab()."""

    def __init__(self, root: Path, *, password: str | None = None, seed: int = 0):
        self.root = Path(root)
        self.seed = seed
        # vCenter's instance UUID (AboutInfo.instanceUuid): unique per vCenter and kept across
        # its restarts, so per lab directory. Clients key per-VM locks by it: two labs (or a lab
        # and vcsim) must never pass for the same server.
        self.instance_uuid = str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"vcblab:{seed}:{self.root.resolve()}")
        )
        self.lock = threading.RLock()
        self.faults = Faults()
        self.bucket = TokenBucket(self.faults)  # throttle_bps: one link shared by all transfers
        self.host_buckets: dict[str, TokenBucket] = {}  # host_throttle_bps: each host's uplink
        self.readers = Readers()  # concurrent readers per datastore and host (/lab/readers)
        self.password = password or secrets.token_urlsafe(16)
        self.password_file: Path | None = None
        self.thumbprint_sha1: str | None = None
        self.caller = threading.local()  # .session of the SOAP call this thread serves
        self.user = USER
        self.objects: dict[str, LabObject] = {}
        self.sessions: dict[str, Session] = {}
        self.logins = 0  # successful logins since the lab started (GET /lab/sessions)
        self.datastores: dict[str, Path] = {}
        self.datastore_kinds: dict[str, str] = {}  # name -> "vmfs5" | "vmfs6" | "nfs"
        self.datastore_morefs: dict[str, str] = {}  # the first datacenter's, by name
        self.datacenter_name = "lab-dc"
        self.snapshot_history: dict[str, dict] = {}
        self.leases: dict[str, LeaseState] = {}
        self.events = EventLog()
        self._ids = itertools.count(100)
        self.faults.listeners.append(self._on_faults)
        # set by inventory.build_lab
        self.service_instance = None
        self.root_folder = None
        self.datacenter = None  # the first datacenter ("lab-dc")
        self.datacenters: list = []
        self.hosts: list = []  # the first datacenter's hosts; all_hosts: every datacenter's
        self.all_hosts: list = []

    # -- objects ------------------------------------------------------------------------

    def host_bucket(self, host: str) -> TokenBucket:
        """The token bucket of one host's link (``host_throttle_bps``)."""
        with self.lock:
            bucket = self.host_buckets.get(host)
            if bucket is None:
                bucket = self.host_buckets[host] = TokenBucket(self.faults, "host_throttle_bps")
            return bucket

    def next_moref(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def add(self, obj: LabObject) -> LabObject:
        self.objects[obj.moref] = obj
        return obj

    def remove(self, moref: str) -> None:
        self.objects.pop(moref, None)

    def obj(self, moref: str) -> LabObject | None:
        return self.objects.get(moref)

    def vms(self) -> list:
        from vcblab.vm import LabVm

        return [o for o in self.objects.values() if isinstance(o, LabVm)]

    def find_vm(self, name_or_moref: str):
        """A VM by moref, or by (unescaped or %-escaped) name; None if absent or ambiguous."""
        from vcblab.vm import LabVm

        with self.lock:
            obj = self.objects.get(name_or_moref)
            if isinstance(obj, LabVm):
                return obj
            hits = [vm for vm in self.vms() if name_or_moref in (vm.name, vm.inventory_name)]
            return hits[0] if len(hits) == 1 else None

    # -- datastores ---------------------------------------------------------------------

    def datacenter_at(self, path: str):
        """The datacenter at an inventory path ('lab-dc', '/lab-dc', 'folder/dc'), or None.

        /folder's dcPath is this path; govmomi sends it with a leading slash, vCenter's own
        URLs without one, and both name the same datacenter.
        """
        from vcblab.inventory import Datacenter

        node = self.root_folder
        for part in [p for p in (path or "").split("/") if p]:
            node = next((c for c in node.children() if c.inventory_name == part), None)
            if node is None:
                return None
        return node if isinstance(node, Datacenter) else None

    def datastore_dir(self, dc_path: str | None, ds_name: str) -> Path | None:
        """The directory of datastore ``ds_name`` of the datacenter at ``dc_path``."""
        dc = self.datacenter_at(dc_path or "")
        ds = dc.datastores.get(ds_name) if dc is not None else None
        return ds.path if ds is not None else None

    def find_datastore(self, name: str, dc=None):
        """The datastore ``name`` of datacenter ``dc``; without one, the only datastore of
        that name in the inventory. None if there is none; AmbiguousDatastore if several
        datacenters have one of that name (vCenter then needs the datacenter)."""
        if dc is not None:
            return dc.datastores.get(name)
        hits = [d.datastores[name] for d in self.datacenters if name in d.datastores]
        if len(hits) > 1:
            raise AmbiguousDatastore(
                name, [d.path for d in self.datacenters if name in d.datastores]
            )
        return hits[0] if hits else None

    def delta_format(self, datastore: str, capacity: int, dc=None) -> str:
        from vcblab.disks import delta_format

        ds = self.find_datastore(datastore, dc or self.datacenter)
        return delta_format(ds.kind if ds is not None else "vmfs6", capacity)

    def datastore_path(self, ds_path: str, dc=None) -> Path | None:
        """'[ds] dir/file' -> host path, or None if the datastore is unknown or it escapes.

        ``dc`` is the datacenter the path is meant in (a FileManager call's ``datacenter``, a
        folder's); without it, the datastore name must be unique in the inventory."""
        if not ds_path.startswith("[") or "]" not in ds_path:
            return None
        name, rel = ds_path[1:].split("]", 1)
        ds = self.find_datastore(name, dc)
        return ds.resolve(rel) if ds is not None else None

    # -- sessions -----------------------------------------------------------------------

    def credentials_ok(self, user: str, password: str) -> bool:
        return user == self.user and secrets.compare_digest(
            password.encode(), self.password.encode()
        )

    def login(
        self, user: str, password: str, *, user_agent: str = "", address: str = ""
    ) -> Session | None:
        if self.faults.get("reject_logins") or not self.credentials_ok(user, password):
            return None
        now = time.time()
        session = Session(
            key=secrets.token_hex(20),
            user=user,
            login_time=now,
            last_active=now,
            user_agent=user_agent,
            ip_address=address,
        )
        with self.lock:
            self.sessions[session.key] = session
            self.logins += 1
        return session

    def session(self, key: str | None) -> Session | None:
        """A live session by key, touched; expired ones are dropped."""
        if not key:
            return None
        with self.lock:
            session = self.sessions.get(key)
            if session is None or session.logged_out:
                return None
            now = time.time()
            if now - session.last_active > self.faults.get("session_timeout"):
                del self.sessions[key]
                return None
            session.last_active = now
            return session

    def session_for_cookie(self, cookie_header: str | None) -> Session | None:
        return self.session(session_key_from_cookie(cookie_header))

    def logout(self, session: Session) -> None:
        with self.lock:
            session.logged_out = True
            self.sessions.pop(session.key, None)

    def _on_faults(self, faults: Faults, names: set[str]) -> None:
        if "expire_sessions" in names and faults.take("expire_sessions"):
            with self.lock:
                self.sessions.clear()
        if "reset_cbt" in names:
            target = faults.take("reset_cbt")
            vm = self.find_vm(target) if target else None
            if vm is not None:
                # What a storage vMotion or a crash does: every old change ID becomes invalid.
                for disk in vm.disks.values():
                    if disk.cbt.enabled:
                        disk.cbt.reset()


class AmbiguousDatastore(LookupError):
    """A datastore name found in several datacenters, asked without naming one."""

    def __init__(self, name: str, datacenters: list[str]):
        super().__init__(f"datastore {name!r} exists in datacenters {', '.join(datacenters)}")
        self.name = name
        self.datacenters = datacenters


def session_key_from_cookie(header: str | None) -> str | None:
    if not header:
        return None
    try:
        cookie = SimpleCookie()
        cookie.load(header)
    except CookieError:
        return None
    morsel = cookie.get(COOKIE_NAME)
    return morsel.value.strip('"') if morsel else None
