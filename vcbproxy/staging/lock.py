"""One exclusive lock per VM (borg-style), so two jobs never snapshot and export the same VM at once.

The lock is ``fcntl.flock`` on a file holding JSON about the holder. The kernel drops
a flock when its holder dies, so a dead holder's file is simply found unlocked: that is
a stale lock, taken over with a warning. A live holder keeps the flock and the
contender gets a :class:`LockError` naming it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from datetime import datetime
from pathlib import Path

from vcbproxy.errors import LockError
from vcbproxy.staging.names import safe_component

log = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _since(started: str) -> str:
    try:
        return datetime.fromisoformat(started).strftime("%H:%M:%S")
    except (TypeError, ValueError):
        return str(started or "an unknown time")


class VmLock:
    """``with VmLock(lock_dir, "server-vm-42", description="vm-42 (web01)"):`` …"""

    def __init__(
        self, lock_dir: Path, key: str, *, description: str = "", owner: dict | None = None
    ):
        self.lock_dir = Path(lock_dir)
        # The job holding it (vcbproxy.jobs.ownership.Owner.as_dict): written into the file.
        self.owner = owner
        self.key = key
        self.description = description or key
        self.path = self.lock_dir / (safe_component(key) + ".lock")
        self._fd: int | None = None

    def acquire(self) -> VmLock:
        try:
            self.lock_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LockError(
                f"cannot create lock directory {self.lock_dir}: {exc.strerror or exc}"
            ) from exc
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise LockError(self._held_message(holder)) from None
            except OSError as exc:
                os.close(fd)
                raise LockError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
            # The previous holder unlinks the file on release; if we locked an inode that is
            # no longer the one at our path, we hold nothing anyone else will see: try again.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = self._read(fd)
        if previous:
            log.warning(
                "taking over the stale lock of %s from pid %s on %s (since %s): %s",
                self.description,
                previous.get("pid"),
                previous.get("host"),
                _since(previous.get("started", "")),
                "the process is gone" if self._holder_dead(previous) else "it no longer holds it",
            )
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
            "vm": self.description,
        }
        if self.owner:
            info["owner"] = self.owner
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # Unlink while still holding the flock, so nobody can lock this inode and believe it current.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> VmLock:
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise LockError(f"cannot open lock file {self.path}: {exc.strerror or exc}") from exc

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            data = os.pread(fd, 4096, 0)
            info = json.loads(data.decode("utf-8")) if data.strip() else {}
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    @staticmethod
    def _holder_dead(info: dict) -> bool:
        pid = info.get("pid")
        return (
            info.get("host") == socket.gethostname()
            and isinstance(pid, int)
            and not _pid_alive(pid)
        )

    def _held_message(self, holder: dict) -> str:
        if not holder:
            return f"VM {self.description} is being exported by another process (lock {self.path})"
        where = "" if holder.get("host") == socket.gethostname() else f" on {holder.get('host')}"
        owner = holder.get("owner")
        job = f"job {owner.get('job')}, " if isinstance(owner, dict) and owner.get("job") else ""
        return (
            f"VM {self.description} is being exported by {job}pid {holder.get('pid')}{where} "
            f"since {_since(holder.get('started', ''))}"
        )
