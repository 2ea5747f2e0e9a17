"""What an export is asked to do, and what came of it for one VM."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vcbproxy import errors
from vcbproxy.hooks import Hook
from vcbproxy.models import VmRef
from vcbproxy.transport import ModeOptions


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
    transport_options: ModeOptions = field(default_factory=ModeOptions)
    lock_dir: Path | None = None
    snapshot_timeout: float = 1800.0
    # With CBT on at the snapshot, ask the host which areas of each disk are allocated
    # (QueryChangedDiskAreas with change ID "*", as VADP backups do) and read only those.
    allocation_map: bool = True
    # "sha256": every disk's content and every file hashed (MANIFEST.sha256, vcbproxy.json);
    # "none": disks are not hashed, which leaves the copy to the kernel in SAN mode.
    checksum: str = "sha256"
    # The job id its owner record carries (jobs/ownership.py), in the lock and the snapshot's
    # description; a fleet task names its attempt, so the fleet can tell whether it still
    # runs. Empty: a new id.
    job_id: str = ""


@dataclass
class VmExportResult(errors.Outcome):
    vm: VmRef
    directory: Path
