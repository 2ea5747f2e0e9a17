"""One disk of an export: from the transport's view of the snapshot's disks into the staging
directory, hashed on the way, reading only the allocated areas where the host tells them."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from vcbproxy import errors
from vcbproxy.jobs.export.options import ExportOptions
from vcbproxy.jobs.signals import raise_if_cancelled
from vcbproxy.models import DiskInfo, SnapshotRef, VmRef
from vcbproxy.progress import Progress
from vcbproxy.staging import names
from vcbproxy.transport.disks import Areas, DiskTarget, SnapshotDisks
from vcbproxy.vmdk.copy import DiskCopyResult

log = logging.getLogger(__name__)


def disk_basename(disk: DiskInfo, vm: VmRef) -> str:
    # VCB's naming: <bus><n>-<unit>-<vm name>, so a restore can map files back to devices.
    dev = disk.device_id.replace(":", "-")
    return names.safe_component(f"{dev}-{vm.name}")


def copy_disk(
    session,
    vm: VmRef,
    snapshot: SnapshotRef,
    disk: DiskInfo,
    disks: SnapshotDisks,
    directory: Path,
    basename: str,
    options: ExportOptions,
    progress: Progress,
    cancel: threading.Event,
) -> DiskCopyResult:
    key = f"{vm.name}:{disk.device_id}"
    label = f"{vm.name} {disk.label}"

    def advance(n: int) -> None:
        raise_if_cancelled(cancel)
        progress.advance(key, n)

    with disks.open(
        disk, label=label, allocated=lambda: allocated_areas(session, vm, snapshot, disk, options)
    ) as source:
        progress.start_item(key, source.capacity, label)
        result = source.copy_to(
            DiskTarget(options.fmt, directory, basename, uuid=disk.uuid or None),
            advance=advance,
            checksum=options.checksum != "none",
        )
    progress.finish_item(key, sha256=result.content_sha256, bytes_read=result.bytes_read)
    log.info(
        "%s (%s): %d bytes read, %d zero, sha256 %s, %.1f s",
        disk.label,
        disk.device_id,
        result.bytes_read,
        result.bytes_zero,
        result.content_sha256,
        result.seconds,
    )
    return result


def allocated_areas(
    session, vm: VmRef, snapshot: SnapshotRef, disk: DiskInfo, options: ExportOptions
) -> Areas:
    """The areas of ``disk`` that hold data at the snapshot, or None: read everything.

    Known only when changed block tracking was on when the snapshot was taken (the disk
    has a change ID there). Unallocated areas read as zeros, so a mostly empty disk is
    not sent over the wire at all, whatever the transport. The answer is an optimisation
    only: if the host cannot give it, the whole disk is read.
    """
    from vcbproxy.vsphere import cbt  # pyVmomi: loaded only when a job talks to a server

    if not options.allocation_map or not disk.change_id:
        return None
    try:
        areas = [
            (a.start, a.length)
            for a in cbt.query_changed_areas(
                session, vm, snapshot, disk.key, cbt.ALL, disk.capacity
            )
        ]
    except errors.SnapshotError as exc:
        log.info("%s: no allocation map (%s); reading the whole disk", disk.label, exc)
        return None
    log.info(
        "%s: changed block tracking reports %d bytes allocated in %d areas",
        disk.label,
        sum(length for _, length in areas),
        len(areas),
    )
    return areas
