"""Putting an exported VM back into vSphere (``vcbproxy restore``, what vcbRestore did).

Order matters, so that a failure never costs the user an existing VM:

1. verify the export (a restore from a damaged backup is refused before any byte moves);
2. plan names: ``[datastore] <name>/<name>.vmx``, disks ``<name>.vmdk``, ``<name>_1.vmdk``...;
   ``-b keep`` refuses an existing VM of that name or existing files, ``overwrite`` uploads
   beside the old VM (into a free directory) so the old one stays intact during the upload;
3. upload every disk as a VMFS descriptor + flat extent (converted while streaming), the
   rewritten ``.vmx``, the ``.nvram`` and a ``vmware.log`` (the export's, or an empty one:
   vcsim's RegisterVM refuses a folder without one, and vSphere does not mind it);
4. register the new VM. With ``overwrite`` the old VM is only *unregistered* first (its
   files stay), and re-registered should the new one fail to register; its files are
   deleted only once the new VM is registered, so there is never a moment without a VM;
5. any failure before registration deletes every file this run uploaded.

pyVmomi stays in ``vcbproxy.vsphere``; this module sees sessions and dataclasses only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import posixpath
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vcbproxy import errors
from vcbproxy.jobs.restore_point import restore_point
from vcbproxy.jobs.signals import shielded
from vcbproxy.jobs.upload import StagedDisk, adapter_type, flat_name, upload_disk
from vcbproxy.jobs.verify import verify_export
from vcbproxy.models import DatastorePath, VmRef
from vcbproxy.progress import Progress
from vcbproxy.repository.verify import verify_repository
from vcbproxy.selectors import Selector
from vcbproxy.staging import names
from vcbproxy.staging.metadata import ExportMetadata, read_metadata, staged_vmx
from vcbproxy.staging.vmx import parse_vmx, rewrite_vmx, set_vmx_values
from vcbproxy.transport.put import FileUploader

log = logging.getLogger(__name__)

POLICIES = ("keep", "overwrite")
RESTORE_POINT = "restore-point.json"  # written by jobs/restore_point.py for a CBT run
VMWARE_LOG = "vmware.log"
MAX_DIRECTORY_TRIES = 100


@dataclass
class RestoreOptions:
    source: Path | None = None  # an export directory (or repo + run below)
    name: str | None = None  # default: the exported VM's name
    datastore: str | None = None  # default: the datastore the VM's .vmx was on
    # Inventory path of the datacenter of ``datastore`` (a datastore name is unique only in
    # its datacenter); default: the only one with that datastore, else the VM's own.
    datacenter: str | None = None
    folder: str | None = None  # inventory path of the VM folder
    resource_pool: str | None = None
    host: str | None = None
    policy: str = "keep"
    power_on: bool = False
    timeout: float = 60.0
    verify: bool = True
    repo: Path | None = None  # restore a CBT repository run instead of an export
    run: int | None = None
    repo_vm: str | None = None  # which VM of the repository (uuid or name) when it holds several


@dataclass
class DiskPlan:
    device: str
    staged: StagedDisk
    target: DatastorePath  # the descriptor on the datastore
    adapter: str
    uuid: str | None


@dataclass
class RestorePlan:
    name: str
    datastore: str
    directory: str  # on the datastore
    vmx_text: str  # the .vmx as it will be uploaded (before the final rename)
    vmx_name: str  # staged .vmx file name
    nvram: Path | None
    disks: list[DiskPlan]
    log: Path | None = None  # the export's vmware.log; None uploads an empty one
    source_datacenter: str = ""  # the datacenter the VM was exported from (its path)

    @property
    def vmx_path(self) -> DatastorePath:
        return DatastorePath(self.datastore, f"{self.directory}/{self.name_stem}.vmx")

    @property
    def nvram_path(self) -> DatastorePath:
        return DatastorePath(self.datastore, f"{self.directory}/{self.name_stem}.nvram")

    @property
    def log_path(self) -> DatastorePath:
        return DatastorePath(self.datastore, f"{self.directory}/{VMWARE_LOG}")

    @property
    def name_stem(self) -> str:
        return names.safe_component(self.name)

    def files(self) -> list[DatastorePath]:
        """Every file the restore writes (for the -b keep check)."""
        out = [self.vmx_path] + ([self.nvram_path] if self.nvram else []) + [self.log_path]
        for disk in self.disks:
            out += [disk.target, flat_name(disk.target)]
        return out

    def in_directory(self, directory: str) -> RestorePlan:
        """The same plan with every datastore path moved into ``directory``."""
        disks = [
            DiskPlan(
                d.device,
                d.staged,
                DatastorePath(self.datastore, f"{directory}/{posixpath.basename(d.target.path)}"),
                d.adapter,
                d.uuid,
            )
            for d in self.disks
        ]
        return RestorePlan(
            self.name,
            self.datastore,
            directory,
            self.vmx_text,
            self.vmx_name,
            self.nvram,
            disks,
            self.log,
            self.source_datacenter,
        )


@dataclass
class RestoreResult(errors.Outcome):
    vm: VmRef
    vmx_path: DatastorePath
    uploaded: list[DatastorePath] = field(default_factory=list)
    replaced: VmRef | None = None


# -- planning (local only) ---------------------------------------------------------------


def plan_restore(
    source: Path, *, name: str | None = None, datastore: str | None = None
) -> RestorePlan:
    """Read the export and decide every name on the datastore; touches no server."""
    source = Path(source)
    meta = (
        _restore_point_metadata(source)
        if (source / RESTORE_POINT).is_file()
        else read_metadata(source)
    )
    name = name or meta.vm.name
    if not name:
        raise errors.UsageError(f"{source}: the export records no VM name; give --name")
    if datastore is None:
        try:
            datastore = DatastorePath.parse(meta.vm.vmx_path).datastore
        except ValueError:
            raise errors.UsageError(
                f"{source}: the export records no datastore; give --datastore"
            ) from None
    vmx_name = staged_vmx(source)
    vmx_text = (source / vmx_name).read_text(encoding="utf-8", errors="surrogateescape")
    vmx = parse_vmx(vmx_text)
    stem = names.safe_component(name)
    directory = stem
    disks: list[DiskPlan] = []
    disk_names: dict[str, str] = {}
    for index, disk in enumerate(meta.copied_disks):
        if not disk.files:
            raise errors.StagingError(f"{source}: disk {disk.device} lists no files")
        base = f"{stem}.vmdk" if index == 0 else f"{stem}_{index}.vmdk"
        disk_names[disk.device] = base
        disks.append(
            DiskPlan(
                device=disk.device,
                staged=StagedDisk(
                    source,
                    names.check_component(disk.files[0]),
                    disk.capacity,
                    disk.content_sha256,
                ),
                target=DatastorePath(datastore, f"{directory}/{base}"),
                adapter=adapter_type(vmx, disk.device),
                uuid=disk.uuid or None,
            )
        )
    nvram = _staged_nvram(source, vmx)
    text = rewrite_vmx(vmx_text, disk_names)
    text = set_vmx_values(
        text, {"displayName": name, **({"nvram": f"{stem}.nvram"} if nvram else {})}
    )
    log_file = source / VMWARE_LOG
    return RestorePlan(
        name,
        datastore,
        directory,
        text,
        vmx_name,
        nvram,
        disks,
        log_file if log_file.is_file() else None,
        meta.vm.datacenter,
    )


def _restore_point_metadata(source: Path) -> ExportMetadata:
    """A rebuilt CBT run (``restore-point.json``) read as an export's ``vcbproxy.json``."""
    try:
        point = json.loads((source / RESTORE_POINT).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise errors.StagingError(f"cannot read {source / RESTORE_POINT}: {exc}") from exc
    disks = [
        {
            "device": device,
            "files": d["files"],
            "capacity": d["capacity"],
            "content_sha256": d["sha256"],
        }
        for device, d in sorted(point.get("disks", {}).items())
    ]
    return ExportMetadata.from_json(
        {"vm": point.get("vm") or {}, "disks": disks}, str(source / RESTORE_POINT)
    )


def _staged_nvram(source: Path, vmx: dict[str, str]) -> Path | None:
    """The .vmx's ``nvram`` file, or the export's only .nvram (ESXi's default needs no line)."""
    name = vmx.get("nvram")
    if name and "/" not in name and (source / names.check_component(name)).is_file():
        return source / name
    found = sorted(p for p in source.iterdir() if p.suffix == ".nvram" and p.is_file())
    return found[0] if len(found) == 1 else None


# -- the restore ---------------------------------------------------------------------------


def restore(session, options: RestoreOptions, progress: Progress) -> RestoreResult:
    """Verify, upload, (replace,) register, (power on). See the module docstring for the order."""
    if options.policy not in POLICIES:
        raise errors.UsageError(
            f"unknown policy {options.policy!r}; use one of: {', '.join(POLICIES)}"
        )
    if options.repo is not None:
        with _rebuilt_run(options) as source:
            return _restore_from(session, source, options, progress)
    if options.source is None:
        raise errors.UsageError(
            "give an export directory (-s DIR) or a repository run (--repo DIR --run N)"
        )
    if options.verify:
        _verify_first(options.source)
    return _restore_from(session, options.source, options, progress)


@contextlib.contextmanager
def _rebuilt_run(options: RestoreOptions) -> Iterator[Path]:
    """A CBT run rebuilt as flat disks in a private temporary directory (sparse: holes cost no
    space), after the repository verifies; removed on every path."""
    repo = options.repo
    if repo is None or options.run is None:
        raise errors.UsageError("--repo needs --run N")
    if options.verify:
        problems = verify_repository(repo)
        if problems:
            raise errors.VerifyError(
                f"{repo} does not verify, refusing to restore from it: " + "; ".join(problems[:5])
            )
    with tempfile.TemporaryDirectory(prefix="vcbproxy-restore-") as tmp:
        out = Path(tmp) / "run"
        restore_point(repo, options.run, out, fmt="flat", vm=options.repo_vm)
        yield out


def _restore_from(
    session, source: Path, options: RestoreOptions, progress: Progress
) -> RestoreResult:
    plan = plan_restore(source, name=options.name, datastore=options.datastore)
    datacenter = _target_datacenter(session, plan, options)
    existing = _existing_vm(session, plan.name, datacenter)
    if existing is not None and options.policy == "keep":
        raise errors.StagingError(
            f"a VM named {plan.name!r} already exists ({existing.moref}); "
            f"use --name for another name or -b overwrite to replace it"
        )
    if existing is not None and existing.power_state == "poweredOn":
        # Checked before any byte moves: vSphere unregisters only a powered-off VM.
        raise errors.StagingError(
            f"the VM {plan.name!r} ({existing.moref}) to replace is powered on; "
            f"power it off first, or restore under another --name"
        )
    uploaded: list[DatastorePath] = []
    old_files: list[DatastorePath] = []
    with FileUploader(session, timeout=options.timeout, datacenter=datacenter) as uploader:
        plan = _free_directory(uploader, plan, options.policy)
        log.info(
            "restoring %s as %s into [%s] %s of datacenter %s",
            source,
            plan.name,
            plan.datastore,
            plan.directory,
            datacenter,
        )
        registered: VmRef | None = None
        made: list[DatastorePath] = []  # the VM folder, if this run created it
        try:
            if _make_folder(session, plan, datacenter):
                made.append(DatastorePath(plan.datastore, plan.directory))
            _upload_all(uploader, plan, uploaded, progress)
            if existing is None:
                registered = _register(session, plan, options, datacenter)
            else:
                registered, old_files = _swap(session, existing, plan, options, datacenter)
        except BaseException as exc:
            log.error("restore of %s failed: %s", plan.name, exc)
            if registered is None:
                # newest first: the folder last
                _delete_uploaded(session, made + uploaded, datacenter)
            raise
    result = RestoreResult(registered, plan.vmx_path, uploaded, existing)
    if existing is not None:
        _delete_old_files(session, existing, old_files, set(plan.files()), result, datacenter)
    if options.power_on:
        _power_on(session, registered, result)
    progress.event("restored", vm=plan.name, moref=registered.moref, vmx=str(plan.vmx_path))
    return result


def _verify_first(source: Path) -> None:
    report = verify_export(source)
    if not report.ok:
        shown = "; ".join(report.problems[:5]) + (" ..." if len(report.problems) > 5 else "")
        raise errors.VerifyError(f"{source} does not verify, refusing to restore it: {shown}")


def _target_datacenter(session, plan: RestorePlan, options: RestoreOptions) -> str:
    """The inventory path of the datacenter the restore writes into: the one holding
    ``plan.datastore``. ``--datacenter`` decides when several have a datastore of that name;
    without it, the datacenter the VM was exported from if it is one of them, else the name
    is ambiguous (exit 11, listing them)."""
    # pyVmomi: only when talking to a server
    from vcbproxy.vsphere.datacenters import datacenter_of_datastore, datacenters

    if options.datacenter is None and plan.source_datacenter:
        holding = datacenters(session).holding(plan.datastore)
        if len(holding) > 1 and plan.source_datacenter in holding:
            return plan.source_datacenter
    return datacenter_of_datastore(session, plan.datastore, datacenter=options.datacenter)


def _existing_vm(session, name: str, datacenter: str) -> VmRef | None:
    """The VM called ``name`` in ``datacenter``: the one a restore under that name meets (a
    VM of the same name in another datacenter is another VM)."""
    from vcbproxy.vsphere.inventory import find_vms  # pyVmomi: only when talking to a server

    found = [v for v in find_vms(session, Selector("name", name)) if v.datacenter == datacenter]
    if len(found) > 1:
        raise errors.AmbiguousError(
            f"{len(found)} VMs are named {name!r} ("
            + ", ".join(vm.moref for vm in found)
            + "); cannot tell which to replace"
        )
    return found[0] if found else None


def _free_directory(uploader, plan: RestorePlan, policy: str) -> RestorePlan:
    """``keep``: the planned directory, refused if any target file exists there. ``overwrite``:
    the first of ``<name>``, ``<name>_1``... holding none of the files, so the old VM's own
    files are never overwritten before it is replaced."""
    for attempt in range(MAX_DIRECTORY_TRIES):
        candidate = plan if attempt == 0 else plan.in_directory(f"{plan.directory}_{attempt}")
        taken = [str(f) for f in candidate.files() if uploader.exists(f)]
        if not taken:
            return candidate
        if policy == "keep":
            raise errors.StagingError(
                f"{taken[0]} already exists on the datastore; use -b overwrite "
                f"or --name/--datastore for another place"
            )
    raise errors.StagingError(
        f"no free directory for {plan.name} on [{plan.datastore}] after {MAX_DIRECTORY_TRIES} tries"
    )


def _make_folder(session, plan: RestorePlan, datacenter: str) -> bool:
    """Create the VM's folder; whether it is new. A server without MakeDirectory still takes
    the PUTs (the file service creates folders), the folder is then just not cleaned up."""
    from vcbproxy.vsphere.datastore import make_directory  # pyVmomi: only when talking to a server

    try:
        return make_directory(
            session, DatastorePath(plan.datastore, plan.directory), datacenter=datacenter
        )
    except errors.UnsupportedError as exc:
        log.debug("cannot create the folder first: %s", exc)
        return False


def _upload_all(
    uploader, plan: RestorePlan, uploaded: list[DatastorePath], progress: Progress
) -> None:
    for disk in plan.disks:
        key = f"{plan.name}:{disk.device}"
        progress.start_item(key, disk.staged.capacity, f"{plan.name} {disk.device}")
        upload_disk(
            uploader,
            disk.staged,
            disk.target,
            adapter=disk.adapter,
            uuid=disk.uuid,
            uploaded=uploaded,
            advance=functools.partial(progress.advance, key),
        )
        progress.finish_item(key, target=str(disk.target))
    if plan.nvram is not None:
        data = plan.nvram.read_bytes()
        uploaded.append(plan.nvram_path)
        uploader.put(plan.nvram_path, len(data), [data])
    data = plan.log.read_bytes() if plan.log is not None else b""
    uploaded.append(plan.log_path)
    uploader.put(plan.log_path, len(data), [data] if data else [])
    body = plan.vmx_text.encode("utf-8", "surrogateescape")
    uploaded.append(plan.vmx_path)
    uploader.put(plan.vmx_path, len(body), [body])


def _swap(
    session, existing: VmRef, plan: RestorePlan, options: RestoreOptions, datacenter: str
) -> tuple[VmRef, list[DatastorePath]]:
    """Unregister the old VM, register the new one; put the old one back if that fails.
    Returns the new VM and the old VM's files (listed while it was still registered)."""
    from vcbproxy.vsphere.register import (  # pyVmomi: only when talking to a server
        unregister_vm,
        vm_files,
    )

    old_files = vm_files(session, existing.moref)
    log.warning("replacing the existing VM %s (%s)", existing.name, existing.moref)
    unregister_vm(session, existing.moref)
    try:
        return _register(session, plan, options, datacenter), old_files
    except BaseException:
        _reregister(session, existing)
        raise


def _reregister(session, old: VmRef) -> None:
    """Register the old VM again from its own .vmx (its files were never touched); never raises."""
    from vcbproxy.vsphere.register import register_vm  # pyVmomi: only when talking to a server

    with shielded():
        for folder, pool in ((old.folder or None, old.resource_pool or None), (None, None)):
            try:
                back = register_vm(
                    session,
                    DatastorePath.parse(old.vmx_path),
                    name=old.name,
                    datacenter=old.datacenter,
                    folder=folder,
                    pool=pool,
                )
            except (errors.VcbProxyError, ValueError) as exc:
                log.error(
                    "could not register the old VM %s again from %s: %s",
                    old.name,
                    old.vmx_path,
                    exc,
                )
                continue
            log.warning("the old VM %s is registered again as %s", old.name, back.moref)
            return
        log.error(
            "the old VM %s is unregistered but its files are intact; register %s by hand",
            old.name,
            old.vmx_path,
        )


def _delete_old_files(
    session,
    old: VmRef,
    files: list[DatastorePath],
    keep: set[DatastorePath],
    result: RestoreResult,
    datacenter: str,
) -> None:
    """The replaced VM's files, once the new VM is registered; a failure is a warning (the
    restore itself succeeded), naming what is left to remove by hand."""
    from vcbproxy.vsphere.datastore import delete_file  # pyVmomi: only when talking to a server

    left = []
    for path in files:
        if path in keep:
            continue  # never the new VM's own files
        try:
            delete_file(session, path, datacenter=datacenter)
        except errors.NotFoundError:
            pass
        except errors.VcbProxyError as exc:
            log.warning("could not delete %s of the replaced VM: %s", path, exc)
            left.append(str(path))
    if left:
        result.warn(
            f"files of the replaced VM {old.name} ({old.moref}) are left on the "
            f"datastore: {', '.join(left)}",
            log,
        )


def _register(session, plan: RestorePlan, options: RestoreOptions, datacenter: str) -> VmRef:
    from vcbproxy.vsphere.register import register_vm  # pyVmomi: only when talking to a server

    return register_vm(
        session,
        plan.vmx_path,
        name=plan.name,
        datacenter=datacenter,
        folder=options.folder,
        pool=options.resource_pool,
        host=options.host,
    )


def _power_on(session, vm: VmRef, result: RestoreResult) -> None:
    from vcbproxy.vsphere.register import power_on  # pyVmomi: only when talking to a server

    try:
        power_on(session, vm.moref)
    except errors.VcbProxyError as exc:
        # The VM is restored and registered; not starting it is worth a warning, not a rollback.
        result.warn(f"{vm.name} restored but not powered on: {exc}", log)


def _delete_uploaded(session, uploaded: list[DatastorePath], datacenter: str) -> None:
    """Remove what this run uploaded, newest first; never raises (the first error matters)."""
    from vcbproxy.vsphere.datastore import delete_file  # pyVmomi: only talking to a server

    with shielded():
        left = []
        for path in reversed(uploaded):
            try:
                delete_file(session, path, datacenter=datacenter)
            except errors.NotFoundError:
                pass  # a PUT cut before the server created the file
            except errors.VcbProxyError as exc:
                log.error("could not delete %s: %s", path, exc)
                left.append(str(path))
        if left:
            log.error("files left on the datastore after the failed restore: %s", ", ".join(left))
