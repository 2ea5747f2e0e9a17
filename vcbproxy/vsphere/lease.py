"""An NFC export lease on a snapshot (``ExportSnapshot``): wait until ready, hand out the
device URLs, keep it alive with progress, complete or abort it.

Leaving the ``with`` block normally completes the lease (after a last progress of 100 %);
leaving it by an exception aborts it naming the error. Either way the host releases the
snapshot's disks at once instead of when an idle lease times out. ``complete`` and
``abort`` may also be called inside the block; the first of them wins.
"""

from __future__ import annotations

import logging
import time

from pyVmomi import vmodl

from vcbproxy import errors
from vcbproxy.models import SnapshotRef
from vcbproxy.vsphere.collector import object_props
from vcbproxy.vsphere.faults import fault_message, translated
from vcbproxy.vsphere.snapshots import snapshot_object

log = logging.getLogger(__name__)
READY_TIMEOUT = 300.0


class ExportLease:
    def __init__(self, session, lease, snapshot: SnapshotRef):
        self.session = session
        self.lease = lease
        self.snapshot = snapshot
        self.device_urls: list[dict] = []
        self.done = False

    @classmethod
    def for_snapshot(
        cls, session, snapshot: SnapshotRef, *, timeout: float = READY_TIMEOUT
    ) -> ExportLease:
        with translated(
            f"opening an export lease on snapshot {snapshot.moref}", errors.TransportError
        ):
            lease = snapshot_object(session, snapshot).ExportSnapshot()
        self = cls(session, lease, snapshot)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.abort("vcbproxy: lease not usable")
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        what = f"export lease on snapshot {self.snapshot.moref}"
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            with translated(what, errors.TransportError):
                props = object_props(self.session, self.lease, ["state", "error", "info"])
            state = str(props.get("state", ""))
            if state == "ready":
                info = props.get("info")
                self.device_urls = [
                    {
                        "key": u.key,
                        "url": u.url,
                        "disk": bool(u.disk),
                        "target_id": u.targetId or "",
                        "size": int(u.fileSize or 0),
                    }
                    for u in (info.deviceUrl if info else None) or []
                ]
                return
            if state == "error":
                fault = props.get("error")
                raise errors.TransportError(
                    f"{what} failed: {fault_message(fault) if fault else 'error'}"
                )
            if state == "done":
                raise errors.TransportError(f"{what} ended before it was ready")
            if time.monotonic() >= deadline:
                raise errors.TransportError(f"{what} not ready within {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def progress(self, pct: int) -> None:
        """Tell the host we are alive (a lease without progress times out after ~5 min)."""
        with translated("reporting export lease progress", errors.TransportError):
            self.lease.HttpNfcLeaseProgress(percent=max(0, min(100, int(pct))))

    def complete(self) -> None:
        if self.done:
            return
        with translated("completing the export lease", errors.TransportError):
            self.lease.HttpNfcLeaseComplete()
        self.done = True

    def abort(self, msg: str = "") -> None:
        if self.done:
            return
        self.done = True
        try:
            fault = vmodl.fault.SystemError(
                msg=msg or "aborted by vcbproxy", reason=msg or "aborted"
            )
            self.lease.HttpNfcLeaseAbort(fault=fault)
        except Exception as exc:  # noqa: BLE001 - an abort on a failure path must not mask the failure
            log.warning("aborting the export lease failed: %s", exc)

    def __enter__(self) -> ExportLease:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort(f"vcbproxy: {exc or exc_type.__name__}")
        elif not self.done:
            self.progress(100)
            self.complete()
