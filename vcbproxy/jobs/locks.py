"""Per-VM locking shared by every job that snapshots a VM (export, backup)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from vcbproxy.models import VmRef
from vcbproxy.staging.lock import VmLock


def default_lock_dir() -> Path:
    # Machine-wide on purpose: two exports of one VM into different directories must still collide.
    return Path(os.environ.get("VCBPROXY_LOCK_DIR", "/tmp/vcbproxy-locks"))


def vm_lock(lock_dir: Path | None, session, vm: VmRef):
    server = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{session.host}_{session.port}")
    return VmLock(
        lock_dir or default_lock_dir(),
        f"{server}-{vm.moref}",
        description=f"{vm.moref} ({vm.name})",
    )
