"""Snapshot housekeeping (``vcbSnapshot``): create, list, delete, and sweep stale backup snapshots."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from vcbproxy import errors
from vcbproxy.jobs.backup_snapshot import VCB_SNAPSHOT
from vcbproxy.jobs.ownership import STALE_AFTER, may_remove_snapshot
from vcbproxy.models import SnapshotRef, VmRef

log = logging.getLogger(__name__)

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> timedelta:
    """'90s', '30m', '12h', '2d' or plain seconds."""
    match = _AGE.match(text or "")
    if not match:
        raise errors.UsageError(f"bad age {text!r}: use a number with s, m, h or d (e.g. 12h)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def snapshot_age(snapshot: SnapshotRef, now: datetime) -> timedelta | None:
    if not snapshot.created:
        return None
    try:
        created = datetime.fromisoformat(snapshot.created.replace("Z", "+00:00"))
    except ValueError:
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return now - created


@dataclass
class SweepItem:
    vm: VmRef
    snapshot: SnapshotRef
    age: timedelta | None
    removed: bool = False
    error: str = ""
    kept: bool = False  # not provably stale (jobs/ownership.py): left alone
    why: str = ""  # the ownership verdict's reason


def create(
    session, vm: VmRef, name: str, *, description: str, memory: bool, quiesce: bool
) -> SnapshotRef:
    """Take a snapshot (vcbSnapshot -c)."""
    from vcbproxy.vsphere import snapshots  # pyVmomi: loaded only when a job talks to a server

    return snapshots.create_snapshot(
        session, vm, name, description=description, memory=memory, quiesce=quiesce
    )


def list_snapshots(session, vm: VmRef) -> list[SnapshotRef]:
    """A VM's snapshots, oldest first (vcbSnapshot -l)."""
    from vcbproxy.vsphere import snapshots  # pyVmomi: loaded only when a job talks to a server

    return snapshots.list_snapshots(session, vm)


def delete(session, vm: VmRef, ssid: str) -> None:
    """Remove snapshot ``ssid`` of ``vm`` (vcbSnapshot -d). An SSID the VM does not have
    (unknown, or already removed) is NotFoundError, so a mistyped ID never passes for a
    successful delete."""
    from vcbproxy.vsphere import snapshots  # pyVmomi: loaded only when a job talks to a server

    if ssid not in {s.moref for s in snapshots.list_snapshots(session, vm)}:
        raise errors.NotFoundError(f"{vm.name} has no snapshot {ssid}")
    snapshots.remove_snapshot(session, ssid)


def sweep(
    session,
    *,
    older_than: timedelta = STALE_AFTER,
    dry_run: bool = False,
    name: str = VCB_SNAPSHOT,
) -> list[SweepItem]:
    """Remove, across the inventory, every snapshot called ``name`` whose owner is provably
    gone (:mod:`vcbproxy.jobs.ownership`): one of a finished or killed job on this proxy at
    any age; one whose owner cannot be checked from here (another proxy, no owner record)
    once at least ``older_than`` old. A snapshot of a job still running here is never
    removed, whatever ``older_than`` says. Kept snapshots are listed too (``kept``).
    """
    from vcbproxy.vsphere import snapshots  # pyVmomi: loaded only when a job talks to a server

    now = datetime.now(UTC)
    items = []
    for vm, snap in snapshots.find_all_vcb_snapshots(session, name=name):
        verdict = may_remove_snapshot(snap, stale_after=older_than, now=now)
        item = SweepItem(vm, snap, snapshot_age(snap, now), why=verdict.why)
        items.append(item)
        if not verdict.removable:
            log.info("keeping %s of %s: %s", snap.moref, vm.name, verdict.why)
            item.kept = True
            continue
        if not dry_run:
            try:
                snapshots.remove_snapshot(session, snap.moref)
                item.removed = True
            except errors.VcbProxyError as exc:
                item.error = str(exc)
    return items
