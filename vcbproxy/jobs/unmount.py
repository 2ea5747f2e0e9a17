"""Unmount (``vcbMounter -U``): remove an export and any backup snapshot its VM still carries.

Safe to run twice: a directory that is already gone, or a snapshot already removed, is
not an error — backup products call the post-command on every path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from vcbproxy import errors
from vcbproxy.jobs.backup_snapshot import VCB_SNAPSHOT
from vcbproxy.jobs.ownership import may_remove_snapshot
from vcbproxy.models import VmRef
from vcbproxy.staging.exportdir import ExportDir
from vcbproxy.staging.metadata import METADATA, read_metadata

log = logging.getLogger(__name__)


@dataclass
class UnmountResult:
    removed_dirs: list[Path] = field(default_factory=list)
    removed_snapshots: list[str] = field(default_factory=list)
    kept_snapshots: list[str] = field(default_factory=list)  # a live job's (jobs/ownership.py)
    already_gone: bool = False


def export_dirs_under(directory: Path) -> list[Path]:
    """DIR itself when it is one export, else the DIR/<vm>-fullVM exports of a multi-VM mount."""
    if (directory / METADATA).exists():
        return [directory]
    return sorted(p.parent for p in directory.glob(f"*/{METADATA}"))


def remove_stale_snapshots(session, vm: VmRef, result: UnmountResult) -> list[str]:
    """Remove the VM's _VCB-BACKUP_ snapshots whose owner is provably gone; keep (and say
    so) the others: another job of the same VM may be running (jobs/ownership.py)."""
    from vcbproxy.vsphere import snapshots  # pyVmomi: loaded only when a job talks to a server

    removed = []
    for snap in snapshots.find_snapshots_named(session, vm, VCB_SNAPSHOT):
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


def unmount(session_factory, directory: Path) -> UnmountResult:
    """``session_factory()`` opens a session only when a VM must be looked at."""
    from vcbproxy.vsphere.inventory import get_vm  # pyVmomi: only when talking to a server

    result = UnmountResult()
    if not directory.exists():
        log.info("%s does not exist: nothing to unmount", directory)
        result.already_gone = True
        return result
    exports = export_dirs_under(directory)
    if not exports:
        # Not ours: refusing is safer than deleting a directory someone else filled.
        raise errors.StagingError(
            f"{directory} is not a vcbproxy export (no {METADATA}); not removing it"
        )
    with session_factory() as session:
        for export in exports:
            exported = read_metadata(export).vm
            moref = exported.moref
            try:
                vm = get_vm(session, moref)
            except errors.NotFoundError:
                log.warning(
                    "VM %s (%s) no longer exists; removing the export only", moref, exported.name
                )
                vm = None
            if vm is not None and exported.uuid and vm.uuid != exported.uuid:
                log.warning(
                    "%s now names another VM (uuid %s, export has %s); its snapshots are left alone",
                    moref,
                    vm.uuid,
                    exported.uuid,
                )
                vm = None
            if vm is not None:
                result.removed_snapshots += remove_stale_snapshots(session, vm, result)
            ExportDir.remove(export)
            result.removed_dirs.append(export)
    if directory.exists() and directory not in result.removed_dirs and not any(directory.iterdir()):
        directory.rmdir()
        result.removed_dirs.append(directory)
    return result
