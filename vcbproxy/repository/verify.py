"""Checking a CBT repository without restoring it (``vcbproxy verify --repo``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vcbproxy import errors
from vcbproxy.repository.store import RUN_FILE, Repository
from vcbproxy.staging.manifest import MANIFEST, read_manifest, verify_manifest


@dataclass
class RepositoryCheck:
    """What ``verify --repo`` found, and what it looked at: the files its runs' manifests
    list (each hashed) and the disks (a VM's disk, over all its runs)."""

    problems: list[str] = field(default_factory=list)
    runs: int = 0
    files: int = 0
    disks: int = 0


def verify_repository(repo_dir: Path) -> list[str]:
    """Problems found, one line each naming the file; empty when every run is intact."""
    return check_repository(repo_dir).problems


def check_repository(repo_dir: Path) -> RepositoryCheck:
    """Every run of every VM of the repository, checked against its manifest and extent maps."""
    repo = Repository.open(repo_dir)
    check = RepositoryCheck()
    problems = check.problems
    for vm_uuid in repo.vm_uuids():
        runs = repo.runs(vm_uuid)
        if not runs:
            continue
        seen_full: set[int] = set()
        disks: set[int] = set()
        for info in runs:
            rel = info.path.relative_to(repo.root)
            check.runs += 1
            # config/ is made before the VM's files are copied into it
            problems += [f"{rel}: {p}" for p in verify_manifest(info.path, own_dirs=("config",))]
            try:
                check.files += len(read_manifest(info.path / MANIFEST))
            except errors.VcbProxyError:
                pass  # a missing or unreadable manifest is among the problems already
            try:
                run = info.load()
            except errors.VerifyError as exc:  # reported, not raised
                problems.append(f"{rel}/{RUN_FILE}: {exc}")
                continue
            for disk in run.get("disks", []):
                disks.add(disk["key"])
                data = info.path / disk["data"]
                stored = sum(length for _, length, kind in disk["extents"] if kind == "d")
                if not data.exists():
                    problems.append(f"{rel}/{disk['data']}: missing")
                elif data.stat().st_size != stored:
                    problems.append(
                        f"{rel}/{disk['data']}: {data.stat().st_size} bytes, extent map says {stored}"
                    )
                if disk["kind"] == "full":
                    seen_full.add(disk["key"])
                elif disk["key"] not in seen_full:
                    problems.append(
                        f"{rel}: incremental of disk {disk['key']} has no full run before it"
                    )
        check.disks += len(disks)
    return check
