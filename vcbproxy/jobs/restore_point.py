"""Rebuild every disk of a VM as of one CBT run (``vcbproxy restore-point``).

For each disk: start from the last full run at or before N (a full lists every allocated
area; the rest is zeros), apply each later incremental in order into a sparse raw image,
then write that image in the requested VMDK format, skipping its holes. Memory stays flat:
data moves in chunks, holes are found with SEEK_DATA/SEEK_HOLE.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from vcbproxy import errors
from vcbproxy.repository.extents import apply_extents
from vcbproxy.repository.store import Repository, RunInfo
from vcbproxy.staging import names
from vcbproxy.staging.atomic import write_atomic
from vcbproxy.staging.manifest import hash_zeros, write_manifest
from vcbproxy.staging.vmx import rewrite_vmx
from vcbproxy.vmdk.io import data_ranges
from vcbproxy.vmdk.writers import open_writer

CHUNK = 4 << 20


@dataclass
class RestorePointResult:
    out: Path
    run: int
    disks: dict[str, dict] = field(
        default_factory=dict
    )  # device -> {"files", "sha256", "capacity"}


def restore_point(
    repo_dir: Path, run_number: int, out: Path, *, fmt: str = "flat", vm: str | None = None
) -> RestorePointResult:
    repo = Repository.open(repo_dir)
    vm_uuid = repo.resolve_vm(vm)
    runs = repo.runs(vm_uuid)
    chosen = [r for r in runs if r.number <= run_number]
    if not chosen or chosen[-1].number != run_number:
        have = ", ".join(str(r.number) for r in runs) or "none"
        raise errors.NotFoundError(
            f"{repo_dir} has no run {run_number} for VM {vm_uuid} (runs: {have})"
        )
    if out.exists() and any(out.iterdir()):
        raise errors.StagingError(f"{out} exists and is not empty; restore into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    loaded = [(r, r.load()) for r in chosen]
    target = loaded[-1][1]
    result = RestorePointResult(out, run_number)
    try:
        disk_names: dict[str, str] = {}
        known: dict[str, str] = {}  # flat extents: the content hash is the file's hash
        for entry in target["disks"]:
            basename = names.safe_component(
                f"{entry['device'].replace(':', '-')}-{target['vm']['name']}"
            )
            files, sha, flat_name = _rebuild_disk(
                loaded, entry["key"], entry["capacity"], out, basename, fmt
            )
            if flat_name:
                known[flat_name] = sha
            disk_names[entry["device"]] = files[0]
            result.disks[entry["device"]] = {
                "files": files,
                "sha256": sha,
                "capacity": entry["capacity"],
                "key": entry["key"],
            }
        config_dir = chosen[-1].path / "config"
        for name in target.get("config", []):
            data = (config_dir / name).read_bytes()
            if name.endswith(".vmx"):
                data = rewrite_vmx(data.decode("utf-8", "surrogateescape"), disk_names).encode(
                    "utf-8", "surrogateescape"
                )
            write_atomic(out / name, data)
        write_atomic(
            out / "restore-point.json",
            (
                json.dumps(
                    {
                        "run": run_number,
                        "vm": target["vm"],
                        "snapshot": target["snapshot"],
                        "disks": result.disks,
                    },
                    indent=2,
                    ensure_ascii=False,
                )
                + "\n"
            ).encode(),
        )
        write_manifest(out, known=known)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return result


def _rebuild_disk(
    loaded: list[tuple[RunInfo, dict]], key: int, capacity: int, out: Path, basename: str, fmt: str
) -> tuple[list[str], str, str | None]:
    """The disk rebuilt from its runs: (files, content sha256, name of its raw flat extent
    or None)."""
    chain = [
        (info, next(d for d in run["disks"] if d["key"] == key))
        for info, run in loaded
        if any(d["key"] == key for d in run["disks"])
    ]
    fulls = [i for i, (_, d) in enumerate(chain) if d["kind"] == "full"]
    if not fulls:
        raise errors.VerifyError(f"disk {key} has no full run to start from")
    raw = out / f".{basename}.raw.partial"
    fd = os.open(raw, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, capacity)
        for info, entry in chain[fulls[-1] :]:
            apply_extents(info.path, entry, fd)
        writer = open_writer(fmt, out, basename, capacity)
        digest = hashlib.sha256()
        try:
            for offset, data in _content(fd, capacity):
                if isinstance(data, int):
                    hash_zeros(digest, data)
                else:
                    writer.write(offset, data)
                    digest.update(data)
            files = writer.close()
        except BaseException:
            writer.abort()
            raise
    finally:
        os.close(fd)
        raw.unlink(missing_ok=True)
    return files, digest.hexdigest(), getattr(writer, "flat_name", None)


def _content(fd: int, capacity: int):
    """(offset, bytes) for data and (offset, n) for holes, in order, from a sparse file."""
    pos = 0
    for start, length in data_ranges(fd, 0, capacity):
        if start > pos:
            yield pos, start - pos
        pos, end = start, start + length
        while pos < end:
            block = os.pread(fd, min(CHUNK, end - pos), pos)
            if not block:
                raise errors.StagingError(
                    f"the rebuilt image shrank at {pos} while being written out"
                )
            yield pos, block
            pos += len(block)
    if pos < capacity:
        yield pos, capacity - pos
