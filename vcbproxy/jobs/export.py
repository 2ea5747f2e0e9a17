"""Full-VM export, what ``vcbMounter -t fullvm`` did.

For each VM: lock it, prepare the export directory, run the pre-command, take the
``_VCB-BACKUP_`` snapshot, copy every file and every disk as it was at the snapshot,
remove the snapshot (on every path), write the self-describing metadata, run the
post-command. Nothing here imports pyVmomi: ``vcbproxy.vsphere`` hands back dataclasses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vcbproxy import __version__, errors
from vcbproxy.hooks import Hook, run_hook
from vcbproxy.jobs.backup_snapshot import (
    VCB_SNAPSHOT,
    handle_stale_snapshots,
    remove_snapshot_after_copy,
    remove_snapshot_on_failure,
)
from vcbproxy.jobs.diskcopy import DiskCopyResult, copy_grains, copy_runs
from vcbproxy.jobs.diskread import coalesce
from vcbproxy.jobs.locks import vm_lock
from vcbproxy.models import DatastoreFile, DiskInfo, SnapshotRef, VmRef
from vcbproxy.progress import Progress
from vcbproxy.selectors import Selector
from vcbproxy.staging import names
from vcbproxy.staging.atomic import AtomicFile, write_atomic
from vcbproxy.staging.catalog import write_catalog
from vcbproxy.staging.exportdir import METADATA, ExportDir
from vcbproxy.staging.manifest import write_manifest
from vcbproxy.staging.space import check_free_space
from vcbproxy.staging.vmx import rewrite_vmx

log = logging.getLogger(__name__)

MULTI_VM_KINDS = {"any", "powerstate"}
RUN_LOG = "vcbproxy.log"


@dataclass
class ExportOptions:
    target: Path
    mode: str = "nbdssl"
    fmt: str = "2gbsparse"
    quiesce: bool | None = None  # None: quiesce when VMware Tools runs
    jobs: int = 1
    preexisting_mountpoint: str = "fail"
    preexisting_snapshot: str = "fail"
    fail_on_independent: bool = False
    pre_command: Hook | None = None
    post_command: Hook | None = None
    transport_options: object = None  # vcbproxy.transport.TransportOptions
    lock_dir: Path | None = None
    snapshot_timeout: float = 1800.0
    # With CBT on at the snapshot, ask the host which areas of each disk are allocated
    # (QueryChangedDiskAreas with change ID "*", as VADP backups do) and read only those.
    allocation_map: bool = True
    # "sha256": every disk's content and every file hashed (MANIFEST.sha256, vcbproxy.json);
    # "none": disks are not hashed, which leaves the copy to the kernel in SAN mode.
    checksum: str = "sha256"
    # Set when the command is interrupted: exports running in worker threads (--jobs) stop at
    # their next chunk and clean up, queued ones never start.
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise errors.Interrupted(signal.SIGTERM)


@dataclass
class VmExportResult:
    vm: VmRef
    directory: Path
    warnings: list[str] = field(default_factory=list)
    error: errors.VcbProxyError | None = None

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        return errors.WARNINGS if self.warnings else errors.OK


def export(
    session, selector: Selector, options: ExportOptions, progress: Progress
) -> list[VmExportResult]:
    """Export every VM the selector names; one VM straight into DIR, several into DIR/<vm>-fullVM."""
    from vcbproxy.vsphere.inventory import find_vms, resolve_vm

    if selector.kind in MULTI_VM_KINDS:
        vms = find_vms(session, selector)
        if not vms:
            raise errors.NotFoundError(
                f"no VM matches {selector.kind}:{selector.value}".rstrip(":")
            )
        options.target.mkdir(parents=True, exist_ok=True)
        taken: set[str] = set()
        plan = []
        for vm in vms:
            dirname = names.unique(names.export_dir_name(vm.name), taken)
            taken.add(dirname)
            plan.append((vm, options.target / dirname))
    else:
        vm = resolve_vm(session, selector)
        plan = [(vm, options.target)]

    if len(plan) == 1 and selector.kind not in MULTI_VM_KINDS:
        # One VM: its error is the command's error, raised as is.
        vm, directory = plan[0]
        return [export_vm(session, vm, directory, options, progress)]

    def one(item):
        vm, directory = item
        try:
            return export_vm(session, vm, directory, options, progress)
        except errors.VcbProxyError as exc:  # not Interrupted: a BaseException, it stops them all
            return VmExportResult(vm, directory, error=exc)

    if options.jobs <= 1:
        # In the main thread, so signals turn into exceptions right where the copy runs.
        return [one(item) for item in plan]
    with ThreadPoolExecutor(max_workers=options.jobs, thread_name_prefix="export") as pool:
        futures = [pool.submit(one, item) for item in plan]
        try:
            return [f.result() for f in futures]
        except BaseException:
            # Ctrl-C/SIGTERM arrive in this (main) thread: stop the workers, start no more.
            options.cancel.set()
            for f in futures:
                f.cancel()
            raise


class _RunLog:
    """The run's log inside the export directory, beside the data (virtnbdbackup-style)."""

    def __init__(self, path: Path, vm: VmRef):
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setLevel(logging.DEBUG)
        self.handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        vm_name = vm.name

        class OnlyThisJob(logging.Filter):
            # With --jobs N several exports log at once; keep each VM's lines in its own file.
            def filter(self, record):
                return getattr(record, "vm", vm_name) == vm_name

        self.handler.addFilter(OnlyThisJob())
        self.logger = logging.getLogger("vcbproxy")
        self.logger.addHandler(self.handler)
        if self.logger.level == logging.NOTSET or self.logger.level > logging.INFO:
            self.logger.setLevel(logging.INFO)

    def close(self):
        self.logger.removeHandler(self.handler)
        self.handler.close()


def export_vm(
    session, vm: VmRef, directory: Path, options: ExportOptions, progress: Progress
) -> VmExportResult:
    from vcbproxy import transport as transports
    from vcbproxy.vsphere import files as vm_files
    from vcbproxy.vsphere import snapshots

    options.check_cancelled()
    result = VmExportResult(vm, directory)
    started = time.time()
    with vm_lock(options.lock_dir, session, vm):
        export_dir = ExportDir.prepare(directory, preexisting=options.preexisting_mountpoint)
        run_log = _RunLog(export_dir.path / RUN_LOG, vm)
        snapshot: SnapshotRef | None = None
        succeeded = False
        try:
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

            quiesce = vm.tools_running if options.quiesce is None else options.quiesce
            snap_started = time.monotonic()
            snapshot = snapshots.create_snapshot(
                session,
                vm,
                VCB_SNAPSHOT,
                description=f"vcbproxy {__version__} export",
                memory=False,
                quiesce=quiesce,
                timeout=options.snapshot_timeout,
            )
            log.info("snapshot %s (%s) taken, quiesce=%s", snapshot.moref, VCB_SNAPSHOT, quiesce)
            config_files, disks = vm_files.vm_files_at_snapshot(session, vm, snapshot)

            with (
                transports.create(
                    options.mode, session=session, options=options.transport_options
                ) as transport,
                _nfc_lease(session, snapshot, transport) as lease_disks,
            ):
                copied_files = copy_config_files(transport, config_files, export_dir)
                disk_results = {}
                disk_names: dict[str, str] = {}
                lease_map = (
                    _match_lease_disks(disks, lease_disks) if lease_disks is not None else {}
                )
                for disk in disks:
                    if disk.independent:
                        message = (
                            f"{vm.name}: {disk.label} ({disk.device_id}) is {disk.disk_mode} and cannot be "
                            f"snapshotted; skipped"
                        )
                        if options.fail_on_independent:
                            raise errors.SnapshotError(
                                message.replace("; skipped", "; refusing (--fail-on-independent)")
                            )
                        result.warnings.append(message)
                        progress.event("warning", vm=vm.name, message=message)
                        log.warning("%s", message)
                        continue
                    basename = names.unique(_disk_basename(disk, vm), set(disk_names.values()))
                    if lease_disks is not None:
                        disk_results[disk.device_id] = _copy_lease_disk(
                            transport,
                            lease_map[disk.device_id],
                            disk,
                            export_dir,
                            basename,
                            options,
                            progress,
                            vm,
                        )
                    else:
                        areas = _allocated_areas(session, vm, snapshot, disk, options)
                        if areas is not None:
                            areas = coalesce(areas, transport.request_cost)
                        disk_results[disk.device_id] = _copy_disk(
                            transport, disk, export_dir, basename, options, progress, vm, areas
                        )
                    disk_names[disk.device_id] = disk_results[disk.device_id].files[0]
                served_by = dict(getattr(transport, "served_by", {}) or {})
                stats = getattr(transport, "stats", None)

            remove_snapshot_after_copy(session, snapshot, options, result.warnings)
            removed, snapshot = snapshot, None
            snapshot_seconds = time.monotonic() - snap_started

            vmx_name = _write_vmx(export_dir, copied_files, disk_names, vm)
            _write_catalog(export_dir, vm, removed, vmx_name, disks, disk_names)
            _write_metadata(
                export_dir,
                vm,
                removed,
                options,
                disks,
                disk_results,
                served_by,
                stats,
                started,
                snapshot_seconds,
                result.warnings,
                session,
            )
            succeeded = True
        except BaseException as exc:
            log.info("export of %s failed: %s", vm.name, exc)  # the CLI prints the one-line error
            raise
        finally:
            if snapshot is not None:
                remove_snapshot_on_failure(session, snapshot, options)
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
            result.warnings.append(f"post-command failed: {exc}")
            log.warning("post-command failed: %s", exc)
    return result


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


def _advance(options: ExportOptions, progress: Progress, key: str, n: int) -> None:
    options.check_cancelled()
    progress.advance(key, n)


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


def _disk_basename(disk: DiskInfo, vm: VmRef) -> str:
    # VCB's naming: <bus><n>-<unit>-<vm name>, so a restore can map files back to devices.
    dev = disk.device_id.replace(":", "-")
    return names.safe_component(f"{dev}-{vm.name}")


def copy_config_files(
    transport, files: list[DatastoreFile], export_dir: ExportDir
) -> dict[str, str]:
    """Copy .vmx, .nvram and logs; returns {kind-or-name: staged name}. The .vmx is held for rewriting."""
    staged: dict[str, str] = {}
    taken: set[str] = set()
    for f in files:
        name = names.unique(names.safe_component(posixpath.basename(f.location.path)), taken)
        taken.add(name)
        source = transport.open(file=f.location)
        try:
            target = export_dir.file(name + ".orig" if f.kind == "config" else name)
            with AtomicFile(target) as out:
                for chunk in source.stream(0, source.size):
                    out.write(chunk)
        finally:
            source.close()
        staged[name] = f.kind
    return staged


def _allocated_areas(
    session, vm: VmRef, snapshot: SnapshotRef, disk: DiskInfo, options: ExportOptions
) -> list[tuple[int, int]] | None:
    """The areas of ``disk`` that hold data at the snapshot, or None: read everything.

    Known only when changed block tracking was on when the snapshot was taken (the disk
    has a change ID there). Unallocated areas read as zeros, so a mostly empty disk is
    not sent over the wire at all, whatever the transport. The answer is an optimisation
    only: if the host cannot give it, the whole disk is read.
    """
    from vcbproxy.vsphere import cbt

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


def _copy_disk(
    transport,
    disk: DiskInfo,
    export_dir: ExportDir,
    basename: str,
    options: ExportOptions,
    progress: Progress,
    vm: VmRef,
    areas: list[tuple[int, int]] | None = None,
) -> DiskCopyResult:
    from vcbproxy.jobs.diskread import disk_chain, only_areas
    from vcbproxy.vmdk import VmdkError
    from vcbproxy.vmdk.writers import open_writer

    key = f"{vm.name}:{disk.device_id}"
    writer = None
    try:
        with disk_chain(transport, disk) as (chain, stream_of):
            # The descriptor is the truth about the bytes; the configured size only labels them.
            if chain.capacity != disk.capacity:
                log.warning(
                    "%s: descriptor capacity %d differs from the configured %d",
                    disk.label,
                    chain.capacity,
                    disk.capacity,
                )
            progress.start_item(key, chain.capacity, f"{vm.name} {disk.label}")
            writer = open_writer(
                options.fmt, export_dir.path, basename, chain.capacity, uuid=disk.uuid or None
            )
            runs = chain.runs() if areas is None else only_areas(chain.runs(), areas)
            result = copy_runs(
                runs,
                stream_of,
                writer,
                capacity=chain.capacity,
                advance=lambda n: _advance(options, progress, key, n),
                checksum=options.checksum != "none",
            )
        closing = time.monotonic()
        result.files = writer.close()
        result.sync_seconds = time.monotonic() - closing
        result.allocation_map = areas is not None
    except VmdkError as exc:
        if writer is not None:
            writer.abort()
        raise errors.TransportError(f"{vm.name} {disk.label}: cannot read the disk: {exc}") from exc
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
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


@contextlib.contextmanager
def _nfc_lease(session, snapshot: SnapshotRef, transport):
    """For nfc mode: an ExportSnapshot lease, completed on success, aborted on failure.

    Yields the lease's disk device URLs, or None for every other mode.
    """
    if getattr(transport, "name", "") != "nfc":
        yield None
        return
    from vcbproxy.vsphere.lease import ExportLease

    with ExportLease.for_snapshot(session, snapshot) as lease:
        transport.attach(lease)
        yield [entry for entry in lease.device_urls if entry.get("disk")]


def _match_lease_disks(disks: list[DiskInfo], entries: list[dict]) -> dict[str, dict]:
    """Map each disk to its lease URL: by device key where the lease names it, else in device order."""
    by_key = {}
    for entry in entries:
        tail = str(entry.get("key", "")).rstrip("/").rsplit("/", 1)[-1]
        if tail.isdigit():
            by_key[int(tail)] = entry
    if all(d.key in by_key for d in disks if not d.independent) and by_key:
        return {d.device_id: by_key[d.key] for d in disks if d.key in by_key}
    if len(entries) != len(disks):
        raise errors.TransportError(
            f"the NFC lease offers {len(entries)} disks but the snapshot has {len(disks)}; use -m nbdssl"
        )
    return {d.device_id: e for d, e in zip(disks, entries, strict=True)}


class _StoredStream:
    """The writer for ``-m nfc --format stream``: the host already sends streamOptimized, so
    its bytes are stored as they arrive (``sink``, fed by the transport) instead of being
    inflated and deflated again. The grains ``copy_grains`` writes here were parsed from
    those same bytes only to hash the content and prove the stream whole; they are dropped.

    The embedded descriptor names the extent as the host chose; a streamOptimized VMDK is a
    single monolithic extent, so readers (qemu-img, ``verify``) use the file itself, and
    the export's .vmx names the file by its staged name."""

    def __init__(self, path: Path):
        self.sink = AtomicFile(path)
        self.name = path.name

    def write(self, offset: int, data: bytes) -> None:
        pass

    def close(self) -> list[str]:
        self.sha256 = self.sink.commit()
        return [self.name]

    def abort(self) -> None:
        self.sink.abort()


def _copy_lease_disk(
    transport,
    entry: dict,
    disk: DiskInfo,
    export_dir: ExportDir,
    basename: str,
    options: ExportOptions,
    progress: Progress,
    vm: VmRef,
) -> DiskCopyResult:
    from vcbproxy.vmdk import VmdkError
    from vcbproxy.vmdk.writers import open_writer

    key = f"{vm.name}:{disk.device_id}"
    progress.start_item(key, disk.capacity, f"{vm.name} {disk.label}")
    if options.fmt == "stream":
        writer = _StoredStream(export_dir.file(basename + ".vmdk"))
    else:
        writer = open_writer(
            options.fmt, export_dir.path, basename, disk.capacity, uuid=disk.uuid or None
        )
    source = None
    try:
        source = transport.open_disk(entry, sink=getattr(writer, "sink", None))
        if source.capacity != disk.capacity:
            raise errors.TransportError(
                f"{disk.label}: the NFC stream has {source.capacity} bytes, the disk {disk.capacity}"
            )
        result = copy_grains(
            source.grains(),
            writer,
            capacity=disk.capacity,
            advance=lambda n: _advance(options, progress, key, n),
            checksum=options.checksum != "none",
        )
        source.close()
        closing = time.monotonic()
        result.files = writer.close()
        result.sync_seconds = time.monotonic() - closing
        if isinstance(writer, _StoredStream) and result.content_sha256:
            # the stored bytes were hashed as they arrived
            result.file_sha256[writer.name] = writer.sha256
    except VmdkError as exc:
        writer.abort()
        raise errors.TransportError(
            f"{vm.name} {disk.label}: the NFC stream is not a valid streamOptimized VMDK: {exc}"
        ) from exc
    except BaseException:
        writer.abort()
        raise
    finally:
        if source is not None:
            source.close()
    progress.finish_item(key, sha256=result.content_sha256, bytes_read=result.bytes_read)
    return result


def _write_vmx(
    export_dir: ExportDir, copied: dict[str, str], disk_names: dict[str, str], vm: VmRef
) -> str:
    vmx_orig = next((n for n, kind in copied.items() if kind == "config"), None)
    if vmx_orig is None:
        raise errors.TransportError(f"{vm.name}: the VM's .vmx file was not found among its files")
    orig_path = export_dir.file(vmx_orig + ".orig")
    text = orig_path.read_text(encoding="utf-8", errors="surrogateescape")
    write_atomic(
        export_dir.file(vmx_orig), rewrite_vmx(text, disk_names).encode("utf-8", "surrogateescape")
    )
    orig_path.unlink()
    return vmx_orig


def _write_catalog(
    export_dir: ExportDir,
    vm: VmRef,
    snapshot: SnapshotRef,
    vmx_name: str,
    disks: list[DiskInfo],
    disk_names: dict[str, str],
) -> None:
    fields = {
        "version": f"vcbproxy-{__version__}",
        "state": "full",
        "display name": vm.name,
        "uuid": vm.uuid,
        "host": vm.host,
        "resourcepool": vm.resource_pool,
        "vmfolder": vm.folder,
        "timestamp": datetime.now(UTC).strftime("%a %b %d %H:%M:%S %Y"),
        "config.vmx": f'"{vm.vmx_path}"',
        "config.vmxfile": vmx_name,
        "snapshot.id": snapshot.moref,
    }
    for disk in disks:
        if disk.device_id in disk_names:
            fields[f"disk.{disk.device_id}.filename"] = disk_names[disk.device_id]
            fields[f"disk.{disk.device_id}.diskname"] = f'"{disk.chain[0].descriptor.location}"'
    write_catalog(export_dir.path, fields)


def _write_metadata(
    export_dir,
    vm,
    snapshot,
    options,
    disks,
    disk_results,
    served_by,
    stats,
    started,
    snapshot_seconds,
    warnings,
    session,
) -> None:
    meta = {
        "format": "vcbproxy-export/1",
        "vcbproxy": __version__,
        "proxy_host": socket.gethostname(),
        "server": f"{session.host}:{session.port}",
        "vm": {
            "moref": vm.moref,
            "name": vm.name,
            "uuid": vm.uuid,
            "instance_uuid": vm.instance_uuid,
            "host": vm.host,
            "resource_pool": vm.resource_pool,
            "folder": vm.folder,
            "vmx_path": vm.vmx_path,
            "datacenter": vm.datacenter,
            "power_state": vm.power_state,
        },
        "snapshot": {"moref": snapshot.moref, "name": snapshot.name, "created": snapshot.created},
        "transport": {
            "mode": options.mode,
            "served_by": served_by,
            "bytes_read": getattr(stats, "bytes_read", None),
            "requests": getattr(stats, "requests", None),
            "retries": getattr(stats, "retries", None),
        },
        "format_written": options.fmt,
        "checksum": options.checksum,
        "disks": [],
        "started": datetime.fromtimestamp(started, UTC).isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "seconds": round(time.time() - started, 3),
        "snapshot_seconds": round(snapshot_seconds, 3),
        "warnings": warnings,
    }
    if getattr(stats, "bytes_on_wire", 0):
        # SSH's python reader: zero blocks cross the network as 5-byte records.
        meta["transport"]["bytes_on_wire"] = stats.bytes_on_wire
    for disk in disks:
        entry = {
            "device": disk.device_id,
            "label": disk.label,
            "key": disk.key,
            "capacity": disk.capacity,
            "disk_mode": disk.disk_mode,
            "change_id": disk.change_id,
            "uuid": disk.uuid,
            "source": [str(layer.descriptor.location) for layer in disk.chain],
        }
        res = disk_results.get(disk.device_id)
        if res is None:
            entry["skipped"] = True
        else:
            entry.update(
                files=res.files,
                content_sha256=res.content_sha256,
                allocation_map=res.allocation_map,
                bytes_read=res.bytes_read,
                bytes_zero=res.bytes_zero,
                seconds=round(res.seconds, 3),
                sync_seconds=round(res.sync_seconds, 3),
            )
        meta["disks"].append(entry)
    write_atomic(
        export_dir.file(METADATA), (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode()
    )


def read_metadata(directory: Path) -> dict:
    path = Path(directory) / METADATA
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise errors.StagingError(f"{directory} is not a vcbproxy export (no {METADATA})") from exc
    except (OSError, ValueError) as exc:
        raise errors.StagingError(f"cannot read {path}: {exc}") from exc
