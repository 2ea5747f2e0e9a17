"""An export's self-description: ``vcbproxy.json`` and VCB's ``catalog``, written and read here.

:class:`ExportMetadata` is what an export knows about itself (the VM, the snapshot, how each
disk was read and what its content hashes to); ``vcbproxy.json`` is its JSON form, format
``vcbproxy-export/1`` (documented in docs/formats.md). The ``catalog`` says a subset of it the
way VCB did, for backup products that read it. The export job writes both; unmount, compare
and restore read ``vcbproxy.json`` through :func:`read_metadata`. ``verify`` reads the raw
JSON on purpose: it must report a damaged file, not fail on it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vcbproxy import __version__, errors
from vcbproxy.models import SnapshotRef, VmRef
from vcbproxy.staging import names
from vcbproxy.staging.atomic import write_atomic
from vcbproxy.staging.catalog import CATALOG, read_catalog, write_catalog

METADATA = "vcbproxy.json"
FORMAT = "vcbproxy-export/1"


@dataclass
class VmRecord:
    """The VM as it was when it was exported (the ``vm`` object)."""

    moref: str = ""
    name: str = ""
    uuid: str = ""
    instance_uuid: str = ""
    host: str = ""
    resource_pool: str = ""
    folder: str = ""
    vmx_path: str = ""  # "[ds] dir/name.vmx"
    datacenter: str = ""
    power_state: str = ""

    @classmethod
    def of(cls, vm: VmRef) -> VmRecord:
        return cls(**{f.name: getattr(vm, f.name) for f in fields(cls)})


@dataclass
class SnapshotRecord:
    moref: str = ""
    name: str = ""
    created: str = ""  # ISO 8601

    @classmethod
    def of(cls, snapshot: SnapshotRef) -> SnapshotRecord:
        return cls(snapshot.moref, snapshot.name, snapshot.created)


@dataclass
class TransportRecord:
    """How the bytes came: the mode (or chain), which mode served each file, the counters."""

    mode: str = ""
    served_by: dict[str, str] = field(default_factory=dict)  # "[ds] path" -> mode
    bytes_read: int | None = None
    requests: int | None = None
    retries: int | None = None
    # Bytes that crossed the network where that differs from bytes_read (SSH's python
    # reader sends zero blocks as 5-byte records); written only when not 0.
    bytes_on_wire: int = 0


@dataclass
class DiskRecord:
    """One disk of the VM; ``skipped`` (an independent disk) has no files."""

    device: str  # "scsi0:0"
    label: str = ""
    key: int = 0
    capacity: int = 0
    disk_mode: str = "persistent"
    change_id: str = ""  # at the snapshot; "" without changed block tracking
    uuid: str = ""
    source: list[str] = field(default_factory=list)  # every layer read, base first
    skipped: bool = False
    files: list[str] = field(default_factory=list)  # staged files, descriptor first
    content_sha256: str = ""  # of the whole virtual disk; "" with --checksum none
    allocation_map: bool = False
    bytes_read: int = 0
    bytes_zero: int = 0
    seconds: float = 0.0
    sync_seconds: float = 0.0

    # What a skipped disk's entry holds; a copied disk's has every field.
    _IDENTITY = ("device", "label", "key", "capacity", "disk_mode", "change_id", "uuid", "source")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.skipped:
            return {**{k: data[k] for k in self._IDENTITY}, "skipped": True}
        del data["skipped"]
        return data


@dataclass
class ExportMetadata:
    """Everything ``vcbproxy.json`` holds."""

    vm: VmRecord
    snapshot: SnapshotRecord
    disks: list[DiskRecord]
    transport: TransportRecord = field(default_factory=TransportRecord)
    format_written: str = ""  # 2gbsparse, monolithic, flat, stream
    checksum: str = "sha256"  # or "none": the disks were not hashed
    started: str = ""  # ISO 8601
    finished: str = ""
    seconds: float = 0.0
    snapshot_seconds: float = 0.0  # how long the VM ran on the backup snapshot
    # seconds of the steps around the copy that the server does: {"snapshot_create": s, ...}
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    server: str = ""  # "host:port"
    proxy_host: str = ""
    vcbproxy: str = __version__
    format: str = FORMAT

    @property
    def copied_disks(self) -> list[DiskRecord]:
        return [d for d in self.disks if not d.skipped]

    def to_json(self) -> dict[str, Any]:
        transport = asdict(self.transport)
        if not self.transport.bytes_on_wire:
            del transport["bytes_on_wire"]
        return {
            "format": self.format,
            "vcbproxy": self.vcbproxy,
            "proxy_host": self.proxy_host,
            "server": self.server,
            "vm": asdict(self.vm),
            "snapshot": asdict(self.snapshot),
            "transport": transport,
            "format_written": self.format_written,
            "checksum": self.checksum,
            "disks": [d.to_json() for d in self.disks],
            "started": self.started,
            "finished": self.finished,
            "seconds": self.seconds,
            "snapshot_seconds": self.snapshot_seconds,
            "timings": dict(self.timings),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_json(cls, data: Any, where: str = METADATA) -> ExportMetadata:
        """Read what :meth:`to_json` wrote; fields it lacks take their defaults (a CBT
        restore point has only ``vm`` and ``disks``). StagingError names what is wrong."""
        try:
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            disks = [_record(DiskRecord, d) for d in data.get("disks", [])]
            return cls(
                vm=_record(VmRecord, data.get("vm", {})),
                snapshot=_record(SnapshotRecord, data.get("snapshot", {})),
                disks=disks,
                transport=_record(TransportRecord, data.get("transport", {})),
                **{
                    k: data[k]
                    for k in (
                        "format_written",
                        "checksum",
                        "started",
                        "finished",
                        "seconds",
                        "snapshot_seconds",
                        "timings",
                        "warnings",
                        "server",
                        "proxy_host",
                        "vcbproxy",
                        "format",
                    )
                    if k in data
                },
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise errors.StagingError(
                f"{where} is not a vcbproxy export description: {exc}"
            ) from exc


def _record(cls, data: Any):
    """``cls`` from a JSON object, ignoring keys it does not know (newer writers may add)."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: not a JSON object")
    known = {f.name for f in fields(cls)}
    record = cls(**{k: v for k, v in data.items() if k in known})
    if isinstance(record, DiskRecord):
        record.capacity = int(record.capacity)
        record.key = int(record.key)
    return record


def write_metadata(directory: Path, meta: ExportMetadata) -> Path:
    path = Path(directory) / METADATA
    write_atomic(path, (json.dumps(meta.to_json(), indent=2, ensure_ascii=False) + "\n").encode())
    return path


def read_metadata(directory: Path) -> ExportMetadata:
    """The description of the export in ``directory``; StagingError when there is none."""
    path = Path(directory) / METADATA
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise errors.StagingError(f"{directory} is not a vcbproxy export (no {METADATA})") from exc
    except (OSError, ValueError) as exc:
        raise errors.StagingError(f"cannot read {path}: {exc}") from exc
    return ExportMetadata.from_json(data, str(path))


# -- VCB's catalog ------------------------------------------------------------------------


def catalog_fields(meta: ExportMetadata, vmx_name: str, *, now: datetime | None = None) -> dict:
    """The ``catalog`` of an export, in VCB's keys and order."""
    now = now or datetime.now(UTC)
    fields_ = {
        "version": f"vcbproxy-{meta.vcbproxy}",
        "state": "full",
        "display name": meta.vm.name,
        "uuid": meta.vm.uuid,
        "host": meta.vm.host,
        "resourcepool": meta.vm.resource_pool,
        "vmfolder": meta.vm.folder,
        "timestamp": now.strftime("%a %b %d %H:%M:%S %Y"),
        "config.vmx": f'"{meta.vm.vmx_path}"',
        "config.vmxfile": vmx_name,
        "snapshot.id": meta.snapshot.moref,
    }
    for disk in meta.copied_disks:
        fields_[f"disk.{disk.device}.filename"] = disk.files[0]
        fields_[f"disk.{disk.device}.diskname"] = f'"{disk.source[0]}"'
    return fields_


def write_export_catalog(directory: Path, meta: ExportMetadata, vmx_name: str) -> Path:
    return write_catalog(Path(directory), catalog_fields(meta, vmx_name))


def staged_vmx(directory: Path) -> str:
    """The export's ``.vmx`` file name: the catalog's ``config.vmxfile``, else the only one."""
    directory = Path(directory)
    if (directory / CATALOG).is_file():
        name = read_catalog(directory / CATALOG).get("config.vmxfile")
        if name and (directory / names.check_component(name)).is_file():
            return name
    found = sorted(p.name for p in directory.iterdir() if p.suffix == ".vmx" and p.is_file())
    if len(found) != 1:
        raise errors.StagingError(f"{directory}: expected one .vmx file, found {len(found)}")
    return found[0]
