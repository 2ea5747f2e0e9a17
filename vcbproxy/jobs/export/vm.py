"""One VM's export: lock it, prepare the directory, run the pre-command, take the
``_VCB-BACKUP_`` snapshot, copy every file and every disk as it was at the snapshot, remove
the snapshot (on every path), write the export's self-description, run the post-command.
Nothing here imports pyVmomi at load time: ``vcbproxy.vsphere`` hands back dataclasses.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from vcbproxy import errors
from vcbproxy.hooks import run_hook
from vcbproxy.jobs.backup_snapshot import JobSnapshot, handle_stale_snapshots
from vcbproxy.jobs.configfiles import copy_config_files
from vcbproxy.jobs.export.disk import copy_disk, disk_basename
from vcbproxy.jobs.export.options import ExportOptions, VmExportResult
from vcbproxy.jobs.export.runlog import RUN_LOG, RunLog
from vcbproxy.jobs.locks import vm_lock
from vcbproxy.jobs.ownership import Owner
from vcbproxy.jobs.signals import raise_if_cancelled
from vcbproxy.models import DiskInfo, VmRef
from vcbproxy.progress import Progress
from vcbproxy.staging import names
from vcbproxy.staging.atomic import write_atomic
from vcbproxy.staging.exportdir import ExportDir
from vcbproxy.staging.manifest import write_manifest
from vcbproxy.staging.metadata import (
    DiskRecord,
    ExportMetadata,
    SnapshotRecord,
    TransportRecord,
    VmRecord,
    write_export_catalog,
    write_metadata,
)
from vcbproxy.staging.space import check_free_space
from vcbproxy.staging.vmx import rewrite_vmx
from vcbproxy.transport import TransferStats
from vcbproxy.transport import create as create_transport
from vcbproxy.vmdk.copy import DiskCopyResult

if TYPE_CHECKING:  # pyVmomi: loaded only when a job talks to a server
    from vcbproxy.vsphere.session import Session as VSession

log = logging.getLogger(__name__)


def export_vm(
    session: VSession,
    vm: VmRef,
    directory: Path,
    options: ExportOptions,
    progress: Progress,
    *,
    cancel: threading.Event | None = None,
) -> VmExportResult:
    """Export ``vm`` into ``directory``; ``cancel``, set by another thread, stops it as a
    SIGTERM would."""
    from vcbproxy.vsphere import files as vm_files  # pyVmomi: only when a job talks to a server

    cancel = cancel or threading.Event()
    raise_if_cancelled(cancel)
    result = VmExportResult(vm, directory)
    started = time.time()
    # This job, as its lock, its snapshot and its directory name it (jobs/ownership.py).
    owner = Owner.this_process(options.job_id or None)
    with vm_lock(options.lock_dir, session, vm, owner):
        # Ours from its first moment: after a kill -9, unmount and the post-command find the
        # VM, the server and the dead owner here, before any data was written.
        identity = {
            "vm": asdict(VmRecord.of(vm)),
            "server": getattr(session, "server_id", ""),
            "address": f"{session.host}:{session.port}",
            "owner": owner.as_dict(),
        }
        export_dir = ExportDir.prepare(
            directory, preexisting=options.preexisting_mountpoint, identity=identity
        )
        run_log = RunLog(export_dir.path / RUN_LOG, vm)
        succeeded = False
        disk_results: dict[str, DiskCopyResult] = {}
        try:
            with JobSnapshot.backup(session, vm, options, "export", owner) as job_snapshot:
                log.info(
                    "export of %s (%s) into %s, mode %s, format %s",
                    vm.name,
                    vm.moref,
                    export_dir.path,
                    options.mode,
                    options.fmt,
                )
                context = _hook_context(vm, export_dir.path)
                if options.pre_command:
                    run_hook(options.pre_command, phase="pre", context=context)

                handle_stale_snapshots(session, vm, options)
                live_disks = vm_files.live_disks(session, vm)
                check_free_space(
                    export_dir.path,
                    sum(d.capacity for d in live_disks if not d.independent) + (64 << 20),
                )

                snap_started = time.monotonic()
                snapshot = job_snapshot.take_backup(options)
                timings = {"snapshot_create": round(time.monotonic() - snap_started, 3)}
                export_dir.record_snapshot(snapshot.moref)
                config_files, disks = vm_files.vm_files_at_snapshot(session, vm, snapshot)

                with (
                    create_transport(
                        options.mode,
                        session=session,
                        options=options.transport_options,
                        datacenter=vm.datacenter or None,
                    ) as transport,
                    transport.disks_at(snapshot, disks) as snapshot_disks,
                ):
                    copied_files = copy_config_files(transport, config_files, export_dir)
                    taken: set[str] = set()
                    for disk in disks:
                        if disk.independent:
                            _skip_independent(vm, disk, options, progress, result)
                            continue
                        basename = names.unique(disk_basename(disk, vm), taken)
                        disk_results[disk.device_id] = res = copy_disk(
                            session,
                            vm,
                            snapshot,
                            disk,
                            snapshot_disks,
                            export_dir.path,
                            basename,
                            options,
                            progress,
                            cancel,
                        )
                        taken.add(res.files[0])
                    served_by = dict(transport.served_by)
                    stats = transport.stats

                removing = time.monotonic()
                job_snapshot.remove(result)
                timings["snapshot_remove"] = round(time.monotonic() - removing, 3)
                meta = ExportMetadata(
                    vm=VmRecord.of(vm),
                    snapshot=SnapshotRecord.of(snapshot),
                    disks=[_disk_record(d, disk_results.get(d.device_id)) for d in disks],
                    transport=_transport_record(options.mode, served_by, stats),
                    format_written=options.fmt,
                    checksum=options.checksum,
                    started=datetime.fromtimestamp(started, UTC).isoformat(),
                    snapshot_seconds=round(time.monotonic() - snap_started, 3),
                    timings=timings,
                    warnings=result.warnings,
                    server=f"{session.host}:{session.port}",
                    proxy_host=socket.gethostname(),
                )
                vmx_name = _write_vmx(export_dir, copied_files, meta, vm)
                write_export_catalog(export_dir.path, meta, vmx_name)
                meta.finished = datetime.now(UTC).isoformat()
                meta.seconds = round(time.time() - started, 3)
                write_metadata(export_dir.path, meta)
                succeeded = True
        except BaseException as exc:
            log.info("export of %s failed: %s", vm.name, exc)  # the CLI prints the one-line error
            raise
        finally:
            run_log.close()
            if not succeeded:
                # A failed export leaves nothing a backup product could mistake for a good one.
                ExportDir.remove(export_dir.path)
        write_manifest(
            export_dir.path,
            known=_hashed_while_copying(disk_results),
            unlisted=_unhashed_disk_files(disk_results),
        )
        export_dir.complete()

    progress.event("vm_done", vm=vm.name, directory=str(directory), warnings=len(result.warnings))
    if options.post_command:
        try:
            run_hook(
                options.post_command,
                phase="post",
                context=_hook_context(vm, directory, status="ok"),
            )
        except errors.HookError as exc:
            result.warn(f"post-command failed: {exc}", log)
    return result


def _skip_independent(
    vm: VmRef, disk: DiskInfo, options: ExportOptions, progress: Progress, result: VmExportResult
) -> None:
    message = (
        f"{vm.name}: {disk.label} ({disk.device_id}) is {disk.disk_mode} and cannot be "
        f"snapshotted; skipped"
    )
    if options.fail_on_independent:
        raise errors.SnapshotError(
            message.replace("; skipped", "; refusing (--fail-on-independent)")
        )
    result.warn(message, log)
    progress.event("warning", vm=vm.name, message=message)


def _disk_record(disk: DiskInfo, res: DiskCopyResult | None) -> DiskRecord:
    record = DiskRecord(
        device=disk.device_id,
        label=disk.label,
        key=disk.key,
        capacity=disk.capacity,
        disk_mode=disk.disk_mode,
        change_id=disk.change_id,
        uuid=disk.uuid,
        source=[str(layer.descriptor.location) for layer in disk.chain],
    )
    if res is None:
        record.skipped = True
        return record
    record.files = res.files
    record.content_sha256 = res.content_sha256
    record.allocation_map = res.allocation_map
    record.bytes_read = res.bytes_read
    record.bytes_zero = res.bytes_zero
    record.seconds = round(res.seconds, 3)
    record.sync_seconds = round(res.sync_seconds, 3)
    return record


def _transport_record(
    mode: str, served_by: dict[str, str], stats: TransferStats
) -> TransportRecord:
    return TransportRecord(
        mode=mode,
        served_by=served_by,
        bytes_read=stats.bytes_read,
        requests=stats.requests,
        retries=stats.retries,
        bytes_on_wire=stats.bytes_on_wire,
    )


def _unhashed_disk_files(disk_results: dict[str, DiskCopyResult]) -> set[str]:
    """Disk files exported with ``--checksum none``: left out of the manifest, not hashed."""
    return {name for res in disk_results.values() if not res.content_sha256 for name in res.files}


def _hashed_while_copying(disk_results: dict[str, DiskCopyResult]) -> dict[str, str]:
    """File hashes the disk copies already know, so the manifest re-reads only the other files
    (.vmx, .nvram, logs, catalog, metadata: cheap, and the run log changes after writing)."""
    return {
        name: digest
        for res in disk_results.values()
        for name, digest in res.file_sha256.items()
        if name in res.files
    }


def _hook_context(vm: VmRef, directory: Path, status: str = "") -> dict[str, str]:
    ctx = {
        "VCBPROXY_VM_NAME": vm.name,
        "VCBPROXY_VM_MOREF": vm.moref,
        "VCBPROXY_VM_UUID": vm.uuid,
        "VCBPROXY_EXPORT_DIR": str(directory),
    }
    if status:
        ctx["VCBPROXY_STATUS"] = status
    return ctx


def _write_vmx(
    export_dir: ExportDir, copied: dict[str, str], meta: ExportMetadata, vm: VmRef
) -> str:
    """The VM's .vmx, rewritten to name the exported disks; its staged name."""
    vmx_orig = next((n for n, kind in copied.items() if kind == "config"), None)
    if vmx_orig is None:
        raise errors.TransportError(f"{vm.name}: the VM's .vmx file was not found among its files")
    disk_names = {d.device: d.files[0] for d in meta.copied_disks}
    orig_path = export_dir.file(vmx_orig + ".orig")
    text = orig_path.read_text(encoding="utf-8", errors="surrogateescape")
    write_atomic(
        export_dir.file(vmx_orig), rewrite_vmx(text, disk_names).encode("utf-8", "surrogateescape")
    )
    orig_path.unlink()
    return vmx_orig
