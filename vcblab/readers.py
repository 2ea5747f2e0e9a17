"""Who reads the lab's disks at once: concurrent readers per datastore and per host, and the
most there ever were (``GET /lab/readers``).

A fleet of proxies promises not to overrun production storage: at most N exports reading a
datastore, at most M reading through one host. The lab is where that promise is checked, so
it counts, at every moment, the distinct readers with a transfer in flight on each datastore
and each host, and keeps the largest count it saw. A reader is a session (the SOAP session
whose cookie the request carries, or the client address for Basic credentials): one export
reading two disks of a datastore in parallel is one reader, two exports are two.

A file belongs to the VM whose directory holds it; its host is that VM's host, as the host
running a VM is the one that serves its disks (nbd/nbdssl through vCenter, NFC leases). A
file no VM owns counts for its datastore only.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path


class Readers:
    """In-flight readers and their peaks, per datastore ("dc path/name") and host (name)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (kind, name) -> reader -> transfers in flight
        self._now: dict[tuple[str, str], Counter[str]] = {}
        self._peak: dict[tuple[str, str], int] = {}

    @contextlib.contextmanager
    def reading(self, reader: str, places: list[tuple[str, str]]) -> Iterator[None]:
        """Count ``reader`` on each (kind, name) in ``places`` while the block runs."""
        with self._lock:
            for place in places:
                counter = self._now.setdefault(place, Counter())
                counter[reader] += 1
                self._peak[place] = max(self._peak.get(place, 0), len(counter))
        try:
            yield
        finally:
            with self._lock:
                for place in places:
                    counter = self._now[place]
                    counter[reader] -= 1
                    if counter[reader] <= 0:
                        del counter[reader]

    def report(self) -> dict:
        """{"datastores": {name: {"now", "max"}}, "hosts": {...}, "lab": {"now", "max"}}
        ("lab": every reader, wherever it reads)."""
        out: dict[str, dict] = {"datastores": {}, "hosts": {}}
        with self._lock:
            for (kind, name), peak in self._peak.items():
                now = len(self._now.get((kind, name), ()))
                if kind == "lab":
                    out["lab"] = {"now": now, "max": peak}
                else:
                    out[kind + "s"][name] = {"now": now, "max": peak}
        return out

    def reset(self) -> dict:
        """Forget the peaks (readers in flight stay counted); the report before the reset."""
        before = self.report()
        with self._lock:
            self._peak = {place: len(c) for place, c in self._now.items() if c}
        return before


def owner_of(lab, target: Path):
    """The lab VM whose directory (the VM's own or one of its disks') holds ``target``."""
    target = Path(target)
    with lab.lock:
        for vm in lab.vms():
            dirs = {vm.dir_path} | {vm.disk_dir(key) for key in vm.slots}
            if any(target.parent == d for d in dirs):
                return vm
    return None


def places_of(datastore_key: str, vm) -> list[tuple[str, str]]:
    """Where a read of a file of ``vm`` (None: no VM) on ``datastore_key`` counts."""
    places = [("lab", "*"), ("datastore", datastore_key)]
    if vm is not None and vm.host is not None:
        places.append(("host", vm.host.name))
    return places


def reader_of(req, session) -> str:
    """The reader a request is: its SOAP session, else (Basic credentials) its address."""
    key = getattr(session, "key", None)
    if key:
        return "session:" + key
    host, port = req.client_address[:2]
    return f"client:{host}:{port}"
