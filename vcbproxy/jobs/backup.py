"""CBT backup, the vStorage-API way: read only what changed since the last run.

The first run of a VM reads the allocated areas (``QueryChangedDiskAreas`` with
``changeId="*"``); later runs read the areas changed since the change ID stored with
the previous run. Disks and change IDs come from the snapshot's config, never the live
VM. A change ID the server no longer accepts (tracking reset) means a full read with a
warning, or a failure with ``--no-fallback``. The run — and with it the new change ID —
is committed only after its data is on disk.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vcbproxy import __version__, errors
from vcbproxy.jobs.backup_snapshot import JobSnapshot, handle_stale_snapshots
from vcbproxy.jobs.configfiles import copy_config_files
from vcbproxy.jobs.locks import vm_lock
from vcbproxy.jobs.ownership import Owner
from vcbproxy.models import DiskInfo, SnapshotRef, VmRef
from vcbproxy.progress import Progress
from vcbproxy.repository.extents import ExtentWriter
from vcbproxy.repository.store import Repository, RunWriter
from vcbproxy.transport import ModeOptions
from vcbproxy.transport import create as create_transport
from vcbproxy.transport.chain import disk_chain, only_areas
from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.chain import read_areas
from vcbproxy.vmdk.readplan import planned

log = logging.getLogger(__name__)


@dataclass
class BackupOptions:
    repo: Path
    mode: str = "nbdssl"
    transport_options: ModeOptions = field(default_factory=ModeOptions)
    quiesce: bool | None = None
    fallback: bool = True
    preexisting_snapshot: str = "fail"
    lock_dir: Path | None = None
    snapshot_timeout: float = 1800.0
    job_id: str = ""  # the job id of its owner record (see ExportOptions.job_id)


@dataclass
class BackupResult(errors.Outcome):
    vm: VmRef
    run: int = 0
    path: Path | None = None
    kinds: dict[str, str] = field(default_factory=dict)  # device -> "full" | "incremental"
    bytes_read: int = 0  # from the host
    bytes_written: int = 0  # into the repository
    changed_bytes: int = 0  # sum of the areas the server reported
    seconds: float = 0.0
    snapshot_seconds: float = 0.0


def backup(session, vm: VmRef, options: BackupOptions, progress: Progress) -> BackupResult:
    from vcbproxy.vsphere import files as vm_files  # pyVmomi: only when talking to a server

    result = BackupResult(vm)
    started = time.monotonic()
    repo = Repository.open(options.repo, create=True)
    owner = Owner.this_process(
        options.job_id or None
    )  # the job its lock and its snapshot name (jobs/ownership.py)
    with repo.locked(f"backup of {vm.name}"), vm_lock(options.lock_dir, session, vm, owner):
        last = repo.last_run(vm.uuid)
        previous = {d["key"]: d for d in last.load()["disks"]} if last else {}
        handle_stale_snapshots(session, vm, options)
        live = [d for d in vm_files.live_disks(session, vm) if not d.independent]
        if live and not all(d.change_id for d in live):
            raise errors.UsageError(
                f"changed block tracking is off for {vm.name}; "
                f"run 'vcbproxy cbt enable -a moref:{vm.moref}' first"
            )
        writer: RunWriter | None = None
        try:
            with JobSnapshot.backup(session, vm, options, "CBT backup", owner) as job_snapshot:
                snap_started = time.monotonic()
                snapshot = job_snapshot.take_backup(options)
                config_files, disks = vm_files.vm_files_at_snapshot(session, vm, snapshot)
                writer = repo.new_run(vm.uuid)
                entries = []
                with create_transport(
                    options.mode,
                    session=session,
                    options=options.transport_options,
                    datacenter=vm.datacenter or None,
                ) as transport:
                    before = transport.stats.bytes_read
                    copy_config_files(transport, config_files, _ConfigSink(writer))
                    for disk in disks:
                        if disk.independent:
                            result.warn(
                                f"{vm.name}: {disk.label} is {disk.disk_mode} and cannot be "
                                f"snapshotted; skipped",
                                log,
                            )
                            continue
                        entries.append(
                            _backup_disk(
                                session,
                                vm,
                                snapshot,
                                disk,
                                previous.get(disk.key),
                                transport,
                                writer,
                                options,
                                progress,
                                result,
                            )
                        )
                    result.bytes_read = transport.stats.bytes_read - before
                job_snapshot.remove(result)  # retried once
                result.snapshot_seconds = time.monotonic() - snap_started
                result.seconds = time.monotonic() - started
                run = {
                    "format": "vcbproxy-run/1",
                    "vcbproxy": __version__,
                    "run": writer.number,
                    "vm": {"moref": vm.moref, "name": vm.name, "uuid": vm.uuid, "host": vm.host},
                    "snapshot": {"moref": snapshot.moref, "created": snapshot.created},
                    "finished": datetime.now(UTC).isoformat(),
                    "seconds": round(result.seconds, 3),
                    "snapshot_seconds": round(result.snapshot_seconds, 3),
                    "bytes_read": result.bytes_read,
                    "mode": options.mode,
                    "config": sorted(p.name for p in (writer.path / "config").iterdir()),
                    "disks": entries,
                    "warnings": result.warnings,
                }
                info = writer.commit(run)
                writer = None
            result.run, result.path = info.number, info.path
            result.bytes_written = sum(f.stat().st_size for f in info.path.iterdir() if f.is_file())
            result.bytes_written += sum(f.stat().st_size for f in (info.path / "config").iterdir())
        finally:
            if writer is not None:
                writer.abort()
    log.info(
        "backup of %s: run %d, %d bytes read, %d written, %.1f s",
        vm.name,
        result.run,
        result.bytes_read,
        result.bytes_written,
        result.seconds,
    )
    return result


class _ConfigSink:
    """Lets the export's config-file copier write into a run's ``config/`` directory."""

    def __init__(self, writer: RunWriter):
        self.dir = writer.path / "config"
        self.dir.mkdir(exist_ok=True)

    def file(self, name: str) -> Path:
        return self.dir / name.removesuffix(".orig")


def _backup_disk(
    session,
    vm: VmRef,
    snapshot: SnapshotRef,
    disk: DiskInfo,
    prev: dict | None,
    transport,
    writer: RunWriter,
    options: BackupOptions,
    progress: Progress,
    result: BackupResult,
) -> dict:
    from vcbproxy.vsphere import cbt  # pyVmomi: loaded only when a job talks to a server

    since = cbt.ALL
    if (
        prev
        and prev.get("uuid") == disk.uuid
        and prev.get("capacity") == disk.capacity
        and prev.get("change_id")
    ):
        since = prev["change_id"]
    try:
        areas = [
            (a.start, a.length)
            for a in cbt.query_changed_areas(session, vm, snapshot, disk.key, since, disk.capacity)
        ]
    except errors.ChangeIdRejected as exc:
        if not options.fallback:
            raise errors.ChangeIdRejected(
                f"{vm.name} {disk.label}: {exc}; not falling back (--no-fallback)"
            ) from exc
        result.warn(
            f"{vm.name} {disk.label}: change ID {since} rejected ({exc}); reading the whole disk",
            log,
        )
        since = cbt.ALL
        areas = [
            (a.start, a.length)
            for a in cbt.query_changed_areas(
                session, vm, snapshot, disk.key, cbt.ALL, disk.capacity
            )
        ]
    changed = sum(length for _, length in areas)
    result.changed_bytes += changed
    kind = "full" if since == cbt.ALL else "incremental"
    result.kinds[disk.device_id] = kind
    key = f"{vm.name}:{disk.device_id}"
    progress.start_item(key, changed, f"{vm.name} {disk.label} ({kind})")
    out = ExtentWriter(writer.file(f"disk-{disk.key}.data"))
    try:
        with disk_chain(transport, disk) as (chain, stream_of):
            # one stream per layer file rather than a request per run (vcbproxy.vmdk.readplan)
            runs, reader = planned(
                only_areas(chain.runs(), areas), stream_of, transport.request_cost
            )
            for offset, piece in read_areas(runs, reader, areas):
                if isinstance(piece, int):
                    out.zeros(offset, piece)
                    progress.advance(key, piece)
                else:
                    out.data(offset, piece)
                    progress.advance(key, len(piece))
        stored = out.commit()
    except VmdkError as exc:  # a layer that cannot be read as a disk: the host's, not ours
        out.abort()
        raise errors.TransportError(f"{vm.name} {disk.label}: cannot read the disk: {exc}") from exc
    except BaseException:
        out.abort()
        raise
    progress.finish_item(key, kind=kind, changed=changed)
    return {
        "key": disk.key,
        "device": disk.device_id,
        "label": disk.label,
        "capacity": disk.capacity,
        "uuid": disk.uuid,
        "since": since,
        "change_id": disk.change_id,
        "kind": kind,
        "changed_bytes": changed,
        **stored,
    }
