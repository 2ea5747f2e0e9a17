"""Checking a CBT repository without restoring it (``vcbproxy verify --repo``)."""

from __future__ import annotations

from pathlib import Path

from vcbproxy import errors
from vcbproxy.repository.store import RUN_FILE, Repository
from vcbproxy.staging.manifest import verify_manifest


def verify_repository(repo_dir: Path) -> list[str]:
    """Problems found, one line each naming the file; empty when every run is intact."""
    repo = Repository.open(repo_dir)
    problems: list[str] = []
    for vm_uuid in repo.vm_uuids():
        runs = repo.runs(vm_uuid)
        if not runs:
            continue
        seen_full: set[int] = set()
        for info in runs:
            rel = info.path.relative_to(repo.root)
            problems += [f"{rel}: {p}" for p in verify_manifest(info.path)]
            try:
                run = info.load()
            except errors.VerifyError as exc:  # reported, not raised
                problems.append(f"{rel}/{RUN_FILE}: {exc}")
                continue
            for disk in run.get("disks", []):
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
    return problems
