"""Prove an export directory intact without restoring it (``vcbproxy verify DIR``).

Checks, each reported as one problem line that names the file:

* the export finished (no incomplete marker) and holds its self-description
  (``vcbproxy.json``, ``catalog``, ``MANIFEST.sha256``);
* every manifest hash, every listed file present, nothing unlisted;
* every disk in ``vcbproxy.json``: its files exist, the VMDK parses with our own reader
  (``vcbproxy.vmdk.chain``), ``qemu-img check`` accepts it where installed, its capacity
  and the SHA-256 of its virtual content match what the export recorded;
* the catalog and the ``.vmx`` name the same disk files as ``vcbproxy.json``.

A manifest rewritten to match a tampered file is still caught by the content hash, and a
tampered ``vcbproxy.json`` by the manifest: no single changed byte goes unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from vcbproxy import errors
from vcbproxy.repository.verify import check_repository
from vcbproxy.staging.catalog import CATALOG, read_catalog
from vcbproxy.staging.exportdir import INCOMPLETE_MARKER
from vcbproxy.staging.manifest import MANIFEST, hash_zeros, verify_manifest
from vcbproxy.staging.metadata import METADATA
from vcbproxy.staging.vmx import parse_vmx
from vcbproxy.vmdk.content import disk_pieces
from vcbproxy.vmdk.io import OpenFiles, local_opener

log = logging.getLogger(__name__)

# A value read from vcbproxy.json, which may have been tampered with: anything JSON holds.
JsonValue = str | int | float | bool | None | list | dict

QEMU_IMG_TIMEOUT = 300.0
QEMU_IMG_NO_CHECKS = 63  # "this image format does not support checks" (flat extents)


@dataclass
class VerifyReport:
    directory: Path
    problems: list[str] = field(default_factory=list)
    checked_files: int = 0
    checked_disks: int = 0
    qemu_img: bool = False  # whether qemu-img check ran
    notes: list[str] = field(default_factory=list)  # limits of what could be checked

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {
            "directory": str(self.directory),
            "ok": self.ok,
            "problems": self.problems,
            "checked_files": self.checked_files,
            "checked_disks": self.checked_disks,
            "qemu_img": self.qemu_img,
            "notes": self.notes,
        }


def verify_export(directory: Path, *, qemu_img: bool = True) -> VerifyReport:
    """Check an export directory; problems are collected, never raised one at a time."""
    directory = Path(directory)
    if not directory.is_dir():
        raise errors.UsageError(f"{directory} is not a directory")
    children = _multi_vm_exports(directory)
    if children:
        return _verify_each(directory, children, qemu_img=qemu_img)
    report = VerifyReport(directory)
    problems = report.problems
    if (directory / INCOMPLETE_MARKER).exists():
        problems.append(f"incomplete: {directory.name} (the export did not finish)")
    for name in (METADATA, CATALOG, MANIFEST):
        if not (directory / name).is_file():
            problems.append(f"missing: {name}")

    if (directory / MANIFEST).is_file():
        try:
            manifest_problems = verify_manifest(directory)
        except errors.VcbProxyError as exc:  # a malformed line: the manifest was tampered with
            manifest_problems = [f"corrupt: {MANIFEST} ({exc})"]
        # "missing: vcbproxy.json" etc. were already reported above.
        problems.extend(p for p in manifest_problems if p not in problems)
        report.checked_files = _count_lines(directory / MANIFEST)

    meta = _load_metadata(directory, problems)
    if meta is None:
        return report
    use_qemu = qemu_img and shutil.which("qemu-img") is not None
    report.qemu_img = use_qemu
    disks = [d for d in meta.get("disks", []) if not d.get("skipped")]
    if meta.get("checksum") == "none":
        # Exported with --checksum none: the disks were never hashed, so the manifest does not
        # list them. They are still read and checked for structure (and qemu-img check).
        unhashed = {f"unlisted: {name}" for d in disks for name in d.get("files") or []}
        problems[:] = [p for p in problems if p not in unhashed]
        report.notes.append(
            "disk contents were not hashed at export (--checksum none): structure checked only"
        )
    for disk in disks:
        _check_disk(directory, disk, problems, use_qemu)
        report.checked_disks += 1
    _check_catalog(directory, meta, disks, problems)
    _check_vmx(directory, disks, problems)
    return report


def _multi_vm_exports(directory: Path) -> list[Path]:
    """The ``<vm>-fullVM`` exports of a multi-VM mount (``-a any``), when DIR is their parent."""
    if any(
        (directory / name).exists() for name in (METADATA, MANIFEST, CATALOG, INCOMPLETE_MARKER)
    ):
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_dir()
        and not p.is_symlink()
        and ((p / METADATA).exists() or (p / MANIFEST).exists())
    )


def _verify_each(directory: Path, children: list[Path], *, qemu_img: bool) -> VerifyReport:
    report = VerifyReport(directory)
    for child in children:
        sub = verify_export(child, qemu_img=qemu_img)
        report.problems.extend(f"{child.name}/{p}" for p in sub.problems)
        report.checked_files += sub.checked_files
        report.checked_disks += sub.checked_disks
        report.qemu_img = report.qemu_img or sub.qemu_img
    return report


def _count_lines(path: Path) -> int:
    try:
        return sum(1 for line in path.read_bytes().splitlines() if line.strip())
    except OSError:
        return 0


def _load_metadata(directory: Path, problems: list[str]) -> dict | None:
    path = directory / METADATA
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"corrupt: {METADATA} ({exc})")
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("disks", []), list):
        problems.append(f"corrupt: {METADATA} (no disk list)")
        return None
    return meta


def _safe_name(directory: Path, name: JsonValue) -> Path | None:
    """A disk file named in the metadata, only if it is a plain name inside the export."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        return None
    return directory / name


def _check_disk(directory: Path, disk: dict, problems: list[str], use_qemu: bool) -> None:
    device = disk.get("device", "?")
    files = disk.get("files") or []
    if not files:
        problems.append(f"corrupt: {METADATA} (disk {device} lists no files)")
        return
    paths = [p for p in (_safe_name(directory, f) for f in files) if p is not None]
    if len(paths) != len(files):
        problems.append(f"unsafe: {METADATA} (disk {device} names a file outside the export)")
        return
    missing = [f for f, p in zip(files, paths, strict=True) if not p.is_file()]
    for name in missing:
        problem = f"missing: {name}"
        if problem not in problems:
            problems.append(problem)
    if missing:
        return
    descriptor = files[0]
    problems.extend(_check_vmdk_content(directory, descriptor, disk))
    if use_qemu:
        problems.extend(_qemu_img_check(directory / descriptor))


def _check_vmdk_content(directory: Path, descriptor: str, disk: dict) -> list[str]:
    """Read the disk with our own reader (every format, stream included), compare capacity
    and the SHA-256 of the virtual disk with what the export recorded."""
    files = OpenFiles(local_opener(directory))
    hasher = hashlib.sha256()
    try:
        capacity, pieces = disk_pieces(descriptor, files.open)
        if disk.get("capacity") is not None and capacity != disk["capacity"]:
            return [
                f"mismatch: {descriptor} (capacity {capacity}, {METADATA} says {disk['capacity']})"
            ]
        position = 0
        for offset, piece in pieces:
            if offset != position:
                raise ValueError(f"the disk map jumps from {position} to {offset}")
            if isinstance(piece, int):
                hash_zeros(hasher, piece)
                position += piece
            else:
                hasher.update(piece)
                position += len(piece)
        if position != capacity:
            raise ValueError(f"the disk map covers {position} of {capacity} bytes")
    except (errors.VcbProxyError, ValueError, OSError, EOFError, KeyError, IndexError) as exc:
        # Our reader refuses malformed descriptors, headers, grain tables and short extents
        # (VmdkError is a ValueError; zlib.error too): name the disk and say why.
        return [f"malformed: {descriptor} ({exc})"]
    except zlib.error as exc:
        return [f"malformed: {descriptor} (compressed grain: {exc})"]
    finally:
        files.close()
    expected = disk.get("content_sha256")
    if expected and hasher.hexdigest() != expected:
        return [f"changed: {descriptor} (virtual disk content sha256 differs from {METADATA})"]
    return []


def _qemu_img_check(path: Path) -> list[str]:
    """``qemu-img check`` as an independent reader: exit 0 is clean, anything else a problem."""
    try:
        proc = subprocess.run(
            ["qemu-img", "check", "-q", "-f", "vmdk", str(path)],
            capture_output=True,
            text=True,
            timeout=QEMU_IMG_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return [f"malformed: {path.name} (qemu-img check timed out)"]
    except OSError as exc:
        log.warning("qemu-img check could not run: %s", exc)
        return []
    if proc.returncode in (0, QEMU_IMG_NO_CHECKS):
        return []
    detail = (proc.stderr or proc.stdout).strip().splitlines()
    return [
        f"malformed: {path.name} (qemu-img check: {detail[0] if detail else f'exit {proc.returncode}'})"
    ]


def _check_catalog(directory: Path, meta: dict, disks: list[dict], problems: list[str]) -> None:
    if not (directory / CATALOG).is_file():
        return
    try:
        catalog = read_catalog(directory / CATALOG)
    except errors.VcbProxyError as exc:
        problems.append(f"corrupt: {CATALOG} ({exc})")
        return
    vm = meta.get("vm") or {}
    for key, value in (("display name", vm.get("name")), ("uuid", vm.get("uuid"))):
        if value is not None and catalog.get(key) != value:
            problems.append(
                f"mismatch: {CATALOG} ({key} {catalog.get(key)!r}, {METADATA} says {value!r})"
            )
    vmx_file = catalog.get("config.vmxfile")
    if vmx_file is not None and (
        _safe_name(directory, vmx_file) is None or not (directory / vmx_file).is_file()
    ):
        problems.append(f"mismatch: {CATALOG} (config.vmxfile {vmx_file!r} is not in the export)")
    listed = {
        k[len("disk.") : -len(".filename")]: v
        for k, v in catalog.items()
        if k.startswith("disk.") and k.endswith(".filename")
    }
    for disk in disks:
        device, name = str(disk.get("device")), (disk.get("files") or [None])[0]
        if listed.pop(device, None) != name:
            problems.append(f"mismatch: {CATALOG} (disk.{device}.filename is not {name!r})")
    for device, name in sorted(listed.items()):
        problems.append(
            f"mismatch: {CATALOG} (disk.{device}.filename {name!r} is not in {METADATA})"
        )


def _check_vmx(directory: Path, disks: list[dict], problems: list[str]) -> None:
    vmx_files = sorted(p for p in directory.iterdir() if p.suffix == ".vmx" and p.is_file())
    if not vmx_files:
        problems.append("missing: the VM's .vmx file")
        return
    for vmx in vmx_files:
        entries = parse_vmx(vmx.read_text(encoding="utf-8", errors="surrogateescape"))
        for disk in disks:
            device, name = disk.get("device", ""), (disk.get("files") or [None])[0]
            if entries.get(f"{device.lower()}.filename") != name:
                problems.append(f"mismatch: {vmx.name} ({device}.fileName is not {name!r})")


def verify_repository(directory: Path) -> VerifyReport:
    """``verify --repo``: the CBT repository checks itself (``vcbproxy.repository.verify``);
    this only gives its problems the same report shape as an export's."""
    directory = Path(directory)
    if not directory.is_dir():
        raise errors.UsageError(f"{directory} is not a directory")
    report = VerifyReport(directory)
    check = check_repository(directory)
    report.problems.extend(check.problems)
    report.checked_files, report.checked_disks = check.files, check.disks
    return report
