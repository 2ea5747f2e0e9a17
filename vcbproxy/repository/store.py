"""On-disk layout of a CBT backup repository, and the only code that writes it.

::

    REPO/vcbproxy-repo.json             {"format": "vcbproxy-repo/1"}
    REPO/.repository.lock                held (flock) by the job using the repository
    REPO/<vm uuid>/runs/000001/run.json  what the run holds (disks, extents, change IDs, timings)
    REPO/<vm uuid>/runs/000001/disk-<key>.data   changed extents of one disk, back to back
    REPO/<vm uuid>/runs/000001/MANIFEST.sha256

A run is built in ``000001.partial/`` and renamed into place after every file is fsynced,
so the change ID it records (the base of the next incremental) exists only once its data
is durable. A ``.partial`` run left by a crash is discarded by the next job.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vcbproxy import errors
from vcbproxy.staging.atomic import fsync_dir, write_atomic
from vcbproxy.staging.lock import VmLock
from vcbproxy.staging.manifest import write_manifest
from vcbproxy.staging.names import safe_component

FORMAT = "vcbproxy-repo/1"
MARKER = "vcbproxy-repo.json"
RUN_FILE = "run.json"
PARTIAL = ".partial"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunInfo:
    vm_uuid: str
    number: int
    path: Path

    def load(self) -> dict:
        try:
            return json.loads((self.path / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise errors.VerifyError(
                f"run {self.number} of {self.vm_uuid}: cannot read {RUN_FILE}: {exc}"
            ) from exc


class Repository:
    def __init__(self, root: Path):
        self.root = Path(root)

    # -- opening --------------------------------------------------------------------

    @classmethod
    def open(cls, root: Path, *, create: bool = False) -> Repository:
        root = Path(root)
        marker = root / MARKER
        if marker.exists():
            try:
                fmt = json.loads(marker.read_text(encoding="utf-8")).get("format")
            except (OSError, ValueError) as exc:
                raise errors.StagingError(f"{marker} is unreadable: {exc}") from exc
            if fmt != FORMAT:
                raise errors.StagingError(
                    f"{root} is a repository of format {fmt!r}; this vcbproxy reads {FORMAT}"
                )
            return cls(root)
        if not create:
            raise errors.NotFoundError(f"{root} is not a vcbproxy repository (no {MARKER})")
        if root.exists() and any(root.iterdir()):
            raise errors.StagingError(
                f"{root} exists and is not an empty directory nor a repository"
            )
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.StagingError(
                f"cannot create repository {root}: {exc.strerror or exc}"
            ) from exc
        write_atomic(marker, json.dumps({"format": FORMAT}).encode() + b"\n")
        return cls(root)

    @contextmanager
    def locked(self, what: str) -> Iterator[Repository]:
        with VmLock(self.root, ".repository", description=f"repository {self.root} ({what})"):
            self._discard_partial_runs()
            yield self

    def _discard_partial_runs(self) -> None:
        for partial in self.root.glob(f"*/runs/*{PARTIAL}"):
            log.warning("discarding %s, left by an interrupted backup", partial)
            shutil.rmtree(partial, ignore_errors=True)

    # -- reading --------------------------------------------------------------------

    def vm_uuids(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob("*/runs"))

    def runs(self, vm_uuid: str) -> list[RunInfo]:
        base = self.root / safe_component(vm_uuid) / "runs"
        found = []
        for p in base.glob("[0-9]" * 6):
            if p.is_dir():
                found.append(RunInfo(vm_uuid, int(p.name), p))
        return sorted(found, key=lambda r: r.number)

    def last_run(self, vm_uuid: str) -> RunInfo | None:
        runs = self.runs(vm_uuid)
        return runs[-1] if runs else None

    def resolve_vm(self, vm: str | None) -> str:
        """The VM uuid a restore or verify means: given, or the only one in the repository."""
        uuids = self.vm_uuids()
        if vm:
            for u in uuids:
                if u == vm or self._vm_name(u) == vm:
                    return u
            raise errors.NotFoundError(
                f"{self.root} holds no VM {vm!r} (it holds: {', '.join(uuids) or 'none'})"
            )
        if len(uuids) != 1:
            names = ", ".join(f"{self._vm_name(u)} ({u})" for u in uuids) or "none"
            raise errors.UsageError(
                f"{self.root} holds {len(uuids)} VMs ({names}); name one with --vm"
            )
        return uuids[0]

    def _vm_name(self, vm_uuid: str) -> str:
        last = self.last_run(vm_uuid)
        return last.load()["vm"]["name"] if last else ""

    # -- writing --------------------------------------------------------------------

    def new_run(self, vm_uuid: str) -> RunWriter:
        last = self.last_run(vm_uuid)
        number = (last.number if last else 0) + 1
        runs_dir = self.root / safe_component(vm_uuid) / "runs"
        runs_dir.mkdir(parents=True, exist_ok=True)
        return RunWriter(runs_dir, number)


class RunWriter:
    """A run being written: files go into ``NNNNNN.partial/``; ``commit`` makes it a run."""

    def __init__(self, runs_dir: Path, number: int):
        self.runs_dir = runs_dir
        self.number = number
        self.final = runs_dir / f"{number:06d}"
        self.path = runs_dir / f"{number:06d}{PARTIAL}"
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir()

    def file(self, name: str) -> Path:
        return self.path / safe_component(name)

    def commit(self, run: dict) -> RunInfo:
        write_atomic(self.path / RUN_FILE, (json.dumps(run, indent=1) + "\n").encode())
        # Every file was written through AtomicFile/write_atomic (fsynced, directory too), and
        # the data files were hashed on the way: the manifest reads only the small files.
        write_manifest(
            self.path,
            known={d["data"]: d["data_sha256"] for d in run.get("disks", []) if d.get("data")},
        )
        fsync_dir(self.path)
        os.rename(self.path, self.final)
        fsync_dir(self.runs_dir)
        return RunInfo(self.final.parent.parent.name, self.number, self.final)

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
