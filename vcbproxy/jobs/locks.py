"""Per-VM locking shared by every job that snapshots a VM (export, backup)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from vcbproxy.jobs.ownership import Owner
from vcbproxy.models import VmRef
from vcbproxy.staging.lock import VmLock


def default_lock_dir() -> Path:
    # Machine-wide on purpose: two exports of one VM into different directories must still collide.
    return Path(os.environ.get("VCBPROXY_LOCK_DIR", "/tmp/vcbproxy-locks"))


def lock_key(session, vm: VmRef) -> str:
    """The VM as the server knows it: the server's identity (vCenter's instance UUID) and the
    VM's instance UUID. Not how the server was spelled ("localhost" or "127.0.0.1", a port or
    none) nor the VM's moref alone: two jobs on one VM must meet on the same lock."""
    server = getattr(session, "server_id", "") or f"{session.host}_{session.port}"
    vm_id = vm.instance_uuid or vm.uuid or vm.moref
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{server}-{vm_id}".lower())


def vm_lock(lock_dir: Path | None, session, vm: VmRef, owner: Owner | None = None) -> VmLock:
    """The lock of ``vm``; ``owner`` (the job taking it) is written into it."""
    return VmLock(
        lock_dir or default_lock_dir(),
        lock_key(session, vm),
        description=f"{vm.moref} ({vm.name})",
        owner=owner.as_dict() if owner else None,
    )
