"""Unmount (``vcbMounter -U``): remove an export and any backup snapshot its VM still carries.

Safe to run twice: a directory that is already gone, or a snapshot already removed, is
not an error — backup products call the post-command on every path. An unfinished export
(a job killed with ``kill -9``) is recognised by the identity in its marker and removed with
its snapshot once its owner is provably gone; the snapshots of a job still running are
kept (jobs/ownership.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vcbproxy import errors
from vcbproxy.jobs.backup_snapshot import VCB_SNAPSHOT
from vcbproxy.jobs.ownership import Owner, decide, may_remove_snapshot
from vcbproxy.models import VmRef
from vcbproxy.selectors import Selector
from vcbproxy.staging.exportdir import INCOMPLETE_MARKER, ExportDir, read_identity
from vcbproxy.staging.metadata import METADATA, read_metadata

log = logging.getLogger(__name__)


@dataclass
class UnmountResult:
    removed_dirs: list[Path] = field(default_factory=list)
    removed_snapshots: list[str] = field(default_factory=list)
    kept_snapshots: list[str] = field(default_factory=list)  # a live job's (jobs/ownership.py)
    already_gone: bool = False


@dataclass(frozen=True)
class _Exported:
    """Which VM an export directory holds (or was being filled with)."""

    moref: str
    name: str
    uuid: str


def _is_export(path: Path) -> bool:
    return (path / METADATA).exists() or (path / INCOMPLETE_MARKER).exists()


def export_dirs_under(directory: Path) -> list[Path]:
    """DIR itself when it is one export (finished, or unfinished with its marker), else the
    DIR/<vm>-fullVM exports of a multi-VM mount."""
    if _is_export(directory):
        return [directory]
    return sorted(p for p in directory.glob("*/") if p.is_dir() and _is_export(p))


def remove_stale_snapshots(session, vm: VmRef, result: UnmountResult) -> list[str]:
    """Remove the VM's _VCB-BACKUP_ snapshots whose owner is provably gone; keep (and say
    so) the others: another job of the same VM may be running (jobs/ownership.py)."""
    from vcbproxy.vsphere import snapshots  # pyVmomi: loaded only when a job talks to a server

    removed: list[str] = []
    for snap in snapshots.find_snapshots_named(session, vm, VCB_SNAPSHOT):
        if snap.moref in result.removed_snapshots + result.kept_snapshots + removed:
            continue
        verdict = may_remove_snapshot(snap)
        if not verdict.removable:
            log.warning("keeping snapshot %s of %s: %s", snap.moref, vm.name, verdict.why)
            result.kept_snapshots.append(snap.moref)
            continue
        try:
            snapshots.remove_snapshot(session, snap.moref)
        except errors.NotFoundError:
            continue  # removed meanwhile (its own job finished, a second cleanup)
        log.info("removed leftover snapshot %s of %s: %s", snap.moref, vm.name, verdict.why)
        removed.append(snap.moref)
    return removed


def _exported_vm(export: Path) -> _Exported:
    """The VM of a finished export (vcbproxy.json), or of an unfinished one (its marker),
    refusing to remove an unfinished export whose job may still be writing it."""
    if (export / METADATA).exists() and not (export / INCOMPLETE_MARKER).exists():
        done = read_metadata(export).vm
        return _Exported(done.moref, done.name, done.uuid)
    identity = read_identity(export) or {}
    owner = Owner.from_dict(identity.get("owner"))
    try:
        started = (export / INCOMPLETE_MARKER).stat().st_mtime
    except OSError:
        started = None
    created = datetime.fromtimestamp(started, UTC) if started is not None else None
    verdict = decide(owner, created)
    if not verdict.removable:
        raise errors.LockError(f"{export} is an unfinished export: {verdict.why}; not removing it")
    vm_info = identity.get("vm")
    known = vm_info if isinstance(vm_info, dict) else {}
    log.warning("%s is an unfinished export (%s): removing it", export, verdict.why)
    return _Exported(
        str(known.get("moref", "")), str(known.get("name", "")), str(known.get("uuid", ""))
    )


def unmount(session_factory, directory: Path, vm_selector: Selector | None = None) -> UnmountResult:
    """``session_factory()`` opens a session only when a VM must be looked at.
    ``vm_selector``: a VM whose stale snapshots (owner gone) go too, even when ``directory``
    is already gone (the post-command's case after a ``kill -9``)."""
    from vcbproxy.vsphere.inventory import get_vm  # pyVmomi: only when talking to a server

    result = UnmountResult()
    exports: list[Path] = []
    if not directory.exists():
        log.info("%s does not exist: nothing to unmount", directory)
        result.already_gone = True
    else:
        exports = export_dirs_under(directory)
        if not exports:
            # Not ours: refusing is safer than deleting a directory someone else filled.
            raise errors.StagingError(
                f"{directory} is not a vcbproxy export (no {METADATA} or {INCOMPLETE_MARKER}); "
                f"not removing it"
            )
    if not exports and vm_selector is None:
        return result
    # Every export's owner is checked before anything is removed.
    exported = {export: _exported_vm(export) for export in exports}
    with session_factory() as session:
        for export in exports:
            record = exported[export]
            vm = None
            if record.moref:
                try:
                    vm = get_vm(session, record.moref)
                except errors.NotFoundError:
                    log.warning(
                        "VM %s (%s) no longer exists; removing the export only",
                        record.moref,
                        record.name,
                    )
            if vm is not None and record.uuid and vm.uuid != record.uuid:
                log.warning(
                    "%s now names another VM (uuid %s, export has %s); its snapshots are left alone",
                    record.moref,
                    vm.uuid,
                    record.uuid,
                )
                vm = None
            if vm is not None:
                result.removed_snapshots += remove_stale_snapshots(session, vm, result)
            ExportDir.remove(export)
            result.removed_dirs.append(export)
        if vm_selector is not None:
            from vcbproxy.jobs.inventory import resolve_vm

            try:
                named = resolve_vm(session, vm_selector)
            except errors.NotFoundError as exc:
                log.warning("%s; no snapshot to look for", exc)
            else:
                result.removed_snapshots += remove_stale_snapshots(session, named, result)
    if directory.exists() and directory not in result.removed_dirs and not any(directory.iterdir()):
        directory.rmdir()
        result.removed_dirs.append(directory)
    return result
