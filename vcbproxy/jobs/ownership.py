"""Who owns a ``_VCB-BACKUP_`` snapshot, and whether anyone but its owner may remove it.

A backup snapshot belongs to the job that took it. The job writes its :class:`Owner`
(proxy host, pid, the pid's start time, a job id) into the snapshot's description, into its
per-VM lock and into its export directory's identity file, from the moment it exists. Every
cleanup path (``unmount``, the post-command, ``snapshot sweep``, ``vcbCleanup``,
``--preexisting-snapshot delete``) asks :func:`may_remove` before removing a snapshot it did
not take itself, and removes it only when its owner is provably gone:

* an owner on this proxy whose process no longer runs (the pid is gone, or now belongs to a
  process started at another time): removable, whatever the snapshot's age;
* an owner on this proxy that still runs: never removable;
* an owner this proxy cannot check (another host), or no owner record at all (an older
  vcbproxy, VCB, a snapshot made by hand): removable only once older than ``stale_after``
  (:data:`STALE_AFTER`, 24 hours, unless the command says otherwise).

Liveness is a :class:`Liveness`: ``alive(owner)`` answers True, False ("provably gone") or
None ("cannot tell from here"). :class:`LocalProcesses` checks owners on this host through
``/proc``; a fleet of proxies chains its own check in front (:class:`FirstAnswer`), e.g. one
that reads job heartbeats from Redis, so that owners on other proxies are no longer "cannot
tell". Pure logic, no pyVmomi: ``jobs`` and ``fleet`` both use it.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote

from vcbproxy.models import SnapshotRef

# How long a snapshot whose owner cannot be checked from here is left alone (documented in
# the README): longer than any export is expected to run.
STALE_AFTER = timedelta(hours=24)
TAG = "vcbproxy-owner"
_TAG_RE = re.compile(
    TAG + r" host=(?P<host>\S+) pid=(?P<pid>\d+) started=(?P<started>\d+(?:\.\d+)?) "
    r"job=(?P<job>[0-9A-Za-z_-]+)"
)
# /proc's start times are in clock ticks after boot (10 ms); boot time is whole seconds.
_START_TOLERANCE = 2.0


def this_host() -> str:
    return socket.gethostname()


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Owner:
    """The job a snapshot (or a lock, or an export directory) belongs to."""

    host: str  # the proxy's host name
    pid: int
    started: float  # the process's start, seconds since the epoch: tells a reused pid apart
    job: str  # one id per job (per VM export or backup)

    @classmethod
    def this_process(cls, job: str | None = None) -> Owner:
        pid = os.getpid()
        started = process_start(pid)
        return cls(
            this_host(), pid, round(started if started else time.time(), 2), job or new_job_id()
        )

    def tag(self) -> str:
        """The owner as it is written into a snapshot's description."""
        return (
            f"{TAG} host={quote(self.host, safe='')} pid={self.pid} "
            f"started={self.started:.2f} job={self.job}"
        )

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """The owner recorded in ``text`` (a snapshot description); None if none is."""
        match = _TAG_RE.search(text or "")
        if match is None:
            return None
        return cls(unquote(match["host"]), int(match["pid"]), float(match["started"]), match["job"])

    def as_dict(self) -> dict:
        return {"host": self.host, "pid": self.pid, "started": self.started, "job": self.job}

    @classmethod
    def from_dict(cls, data: object) -> Owner | None:
        """An owner from a lock file or an export's identity; None if it holds none."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                str(data["host"]), int(data["pid"]), float(data["started"]), str(data["job"])
            )
        except (KeyError, TypeError, ValueError):
            return None

    def __str__(self) -> str:
        return f"job {self.job} (pid {self.pid} on {self.host})"


class Liveness(Protocol):
    """Whether an owner still runs: True, False (provably gone) or None (cannot tell)."""

    def alive(self, owner: Owner) -> bool | None: ...


class LocalProcesses:
    """Owners on this host: alive while their pid runs and was started when the owner says."""

    def __init__(self, host: str | None = None):
        self.host = host or this_host()

    def alive(self, owner: Owner) -> bool | None:
        if owner.host != self.host:
            return None
        started = process_start(owner.pid)
        if started is None:
            return False
        if started < 0:  # no /proc: the pid runs, its start time is unknown
            return True
        return abs(started - owner.started) < _START_TOLERANCE


class FirstAnswer:
    """Several checks in order; the first that can tell answers (e.g. a fleet's heartbeats,
    then this host's processes)."""

    def __init__(self, *checks: Liveness):
        self.checks = checks

    def alive(self, owner: Owner) -> bool | None:
        for check in self.checks:
            answer = check.alive(owner)
            if answer is not None:
                return answer
        return None


@dataclass(frozen=True)
class Verdict:
    """Whether a cleanup may remove a snapshot, and why (for its log and its messages)."""

    removable: bool
    owner: Owner | None
    why: str


def may_remove(
    description: str,
    created: datetime | None,
    *,
    liveness: Liveness | None = None,
    stale_after: timedelta = STALE_AFTER,
    now: datetime | None = None,
) -> Verdict:
    """May a cleanup remove the snapshot described by ``description`` and taken at
    ``created``? (The module's docstring states the rule.)"""
    return decide(
        Owner.parse(description), created, liveness=liveness, stale_after=stale_after, now=now
    )


def decide(
    owner: Owner | None,
    created: datetime | None,
    *,
    liveness: Liveness | None = None,
    stale_after: timedelta = STALE_AFTER,
    now: datetime | None = None,
) -> Verdict:
    """The rule for anything a job owns (a snapshot, an unfinished export directory): may a
    cleanup remove it, made at ``created`` by ``owner`` (None: nobody recorded)?"""
    liveness = liveness or LocalProcesses()
    if owner is not None:
        alive = liveness.alive(owner)
        if alive is False:
            return Verdict(True, owner, f"its owner, {owner}, is gone")
        if alive:
            return Verdict(False, owner, f"it belongs to {owner}, which is still running")
        whose = f"its owner, {owner}, cannot be checked from {this_host()}"
    else:
        whose = "it names no owner"
    age = None if created is None else (now or datetime.now(UTC)) - created
    if age is None:
        if stale_after <= timedelta(0):
            return Verdict(True, owner, f"{whose}, and any age is old enough")
        return Verdict(False, owner, f"{whose}, and its age is unknown")
    if age >= stale_after:
        return Verdict(True, owner, f"{whose}, and it is {_age(age)} old")
    return Verdict(
        False, owner, f"{whose}, and it is only {_age(age)} old (less than {_age(stale_after)})"
    )


def _age(age: timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def process_start(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch; None if it does not run
    (or is a zombie: killed, not yet reaped); -1.0 if it runs but /proc cannot say when."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return -1.0 if _pid_exists(pid) else None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_BOOT: float | None = None


def _boot_time() -> float:
    global _BOOT
    if _BOOT is None:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                _BOOT = float(line.split()[1])
                break
        else:
            _BOOT = 0.0
    return _BOOT


def created_at(snapshot: SnapshotRef) -> datetime | None:
    """A snapshot's create time as the server reported it; None if it did not."""
    if not snapshot.created:
        return None
    try:
        created = datetime.fromisoformat(snapshot.created.replace("Z", "+00:00"))
    except ValueError:
        return None
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def may_remove_snapshot(
    snapshot: SnapshotRef,
    *,
    liveness: Liveness | None = None,
    stale_after: timedelta = STALE_AFTER,
    now: datetime | None = None,
) -> Verdict:
    """:func:`may_remove` for a snapshot as ``vcbproxy.vsphere`` lists it."""
    return may_remove(
        snapshot.description,
        created_at(snapshot),
        liveness=liveness,
        stale_after=stale_after,
        now=now,
    )
