"""The backup snapshot's life around a copy, shared by the full export and the CBT backup.

``options`` is the job's options (:class:`SnapshotOptions`).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from vcbproxy import __version__, errors
from vcbproxy.jobs.signals import shielded
from vcbproxy.models import SnapshotRef, VmRef

log = logging.getLogger(__name__)

# VCB's name for the snapshot a backup takes; sweeps and unmount look for it.
VCB_SNAPSHOT = "_VCB-BACKUP_"


class SnapshotOptions(Protocol):
    """What the export's and the backup's options say about the snapshot."""

    quiesce: bool | None  # None: quiesce when VMware Tools runs
    snapshot_timeout: float
    preexisting_snapshot: str  # "fail" or "delete" a _VCB-BACKUP_ snapshot already there


def take_snapshot(session, vm: VmRef, options: SnapshotOptions, purpose: str) -> SnapshotRef:
    """The backup snapshot: no memory, quiesced as the options say."""
    from vcbproxy.vsphere import snapshots  # pyVmomi: loaded only when a job talks to a server

    quiesce = vm.tools_running if options.quiesce is None else options.quiesce
    snapshot = snapshots.create_snapshot(
        session,
        vm,
        VCB_SNAPSHOT,
        description=f"vcbproxy {__version__} {purpose}",
        memory=False,
        quiesce=quiesce,
        timeout=options.snapshot_timeout,
    )
    log.info("snapshot %s (%s) taken, quiesce=%s", snapshot.moref, VCB_SNAPSHOT, quiesce)
    return snapshot


def handle_stale_snapshots(session, vm: VmRef, options: SnapshotOptions) -> None:
    """A _VCB-BACKUP_ snapshot left by an earlier run: fail, or remove it
    (``options.preexisting_snapshot``)."""
    from vcbproxy.vsphere import snapshots  # pyVmomi: loaded only when a job talks to a server

    stale = snapshots.find_snapshots_named(session, vm, VCB_SNAPSHOT)
    if not stale:
        return
    if options.preexisting_snapshot != "delete":
        raise errors.SnapshotError(
            f"{vm.name} already has a {VCB_SNAPSHOT} snapshot ({', '.join(s.moref for s in stale)}), "
            f"left by an earlier run; remove it with --preexisting-snapshot delete or 'vcbproxy snapshot sweep'"
        )
    for snap in stale:
        log.warning("removing pre-existing %s snapshot %s of %s", VCB_SNAPSHOT, snap.moref, vm.name)
        snapshots.remove_snapshot(session, snap.moref, timeout=options.snapshot_timeout)


def remove_snapshot_after_copy(
    session, snapshot: SnapshotRef, options: SnapshotOptions, outcome: errors.Outcome
) -> None:
    """Remove the backup snapshot once the data is safe; one retry, as a removal task can
    fail transiently (a busy host, a consolidation already running)."""
    from vcbproxy.vsphere import snapshots  # pyVmomi: loaded only when a job talks to a server

    try:
        snapshots.remove_snapshot(session, snapshot.moref, timeout=options.snapshot_timeout)
    except errors.SnapshotError as exc:
        outcome.warn(f"removing snapshot {snapshot.moref} failed ({exc}); retried", log)
        time.sleep(1.0)
        snapshots.remove_snapshot(session, snapshot.moref, timeout=options.snapshot_timeout)
    log.info("snapshot %s removed", snapshot.moref)


def remove_snapshot_on_failure(session, snapshot: SnapshotRef, options: SnapshotOptions) -> None:
    """Best effort after a failed copy; a snapshot that stays is logged for the sweep."""
    from vcbproxy.vsphere import snapshots  # pyVmomi: loaded only when a job talks to a server

    # Shielded: a second Ctrl-C while the removal task runs must not leave the snapshot behind.
    with shielded():
        try:
            snapshots.remove_snapshot(session, snapshot.moref, timeout=options.snapshot_timeout)
            log.info("snapshot %s removed after failure", snapshot.moref)
        except errors.VcbProxyError as exc:
            log.error(
                "could not remove snapshot %s: %s; run 'vcbproxy snapshot sweep'",
                snapshot.moref,
                exc,
            )
