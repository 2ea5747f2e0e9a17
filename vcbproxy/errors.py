"""One error hierarchy for vcbproxy; each class carries its documented exit code.

Library exceptions (pyVmomi faults, paramiko, urllib3, OSError) are translated into
these at the package boundary with ``raise ... from``, so the CLI only ever has to
print ``str(error)`` on one line and exit with ``error.exit_code``.

Exit codes (documented in the README and in ``vcbproxy --help``):

====  =================  ==========================================================
code  name               meaning
====  =================  ==========================================================
0     OK                 everything done
1     FAILURE            unexpected failure (a bug or an unclassified error)
2     USAGE              bad command line or configuration
3     WARNINGS           done, but with warnings (skipped disk, failing post-command)
10    AUTH               login refused, session expired, credentials missing
11    NOT_FOUND          VM/snapshot/datastore not found, or a selector is ambiguous
12    SNAPSHOT           snapshot create/remove failed or a stale snapshot is in the way
13    TRANSPORT          reading or writing disk data failed (dropped, refused, mode unusable)
14    STAGING            staging directory problem: exists, full, unsafe name, bad export
15    LOCK               another job holds the lock on this VM or repository
16    VERIFY             a hash, a file or a VMDK does not check out
17    HOOK               a pre-command failed (post-command failures are warnings)
18    CONNECTION         server unreachable, TLS verification or pinning failed
19    UNSUPPORTED        a mode or feature that vcbproxy refuses rather than fakes
130   SIGINT             interrupted by Ctrl-C (cleanup ran)
143   SIGTERM            terminated (cleanup ran)
====  =================  ==========================================================
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field

OK = 0
FAILURE = 1
USAGE = 2
WARNINGS = 3
AUTH = 10
NOT_FOUND = 11
SNAPSHOT = 12
TRANSPORT = 13
STAGING = 14
LOCK = 15
VERIFY = 16
HOOK = 17
CONNECTION = 18
UNSUPPORTED = 19
SIGINT = 130
SIGTERM = 143

EXIT_CODES: dict[int, str] = {
    OK: "ok",
    FAILURE: "failure",
    USAGE: "usage error",
    WARNINGS: "done with warnings",
    AUTH: "authentication failed",
    NOT_FOUND: "not found or ambiguous",
    SNAPSHOT: "snapshot failure",
    TRANSPORT: "transport failure",
    STAGING: "staging failure",
    LOCK: "locked by another job",
    VERIFY: "verification failed",
    HOOK: "hook failed",
    CONNECTION: "connection or TLS failure",
    UNSUPPORTED: "unsupported mode or feature",
    SIGINT: "interrupted",
    SIGTERM: "terminated",
}


class VcbProxyError(Exception):
    """Base class: a failure a user can act on, with its exit code."""

    exit_code = FAILURE

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(VcbProxyError):
    exit_code = USAGE


class AuthError(VcbProxyError):
    exit_code = AUTH


class NotFoundError(VcbProxyError):
    exit_code = NOT_FOUND


class AmbiguousError(NotFoundError):
    """A selector matched several objects where one was required."""


class SnapshotError(VcbProxyError):
    exit_code = SNAPSHOT


class TransportError(VcbProxyError):
    exit_code = TRANSPORT


class StagingError(VcbProxyError):
    exit_code = STAGING


class LockError(VcbProxyError):
    exit_code = LOCK


class VerifyError(VcbProxyError):
    exit_code = VERIFY


class HookError(VcbProxyError):
    exit_code = HOOK


class ChangeIdRejected(SnapshotError):
    """The server no longer accepts a stored CBT change ID (tracking was reset or disabled)."""


class ConnectionFailure(VcbProxyError):
    exit_code = CONNECTION


class UnsupportedError(VcbProxyError):
    exit_code = UNSUPPORTED


class Interrupted(BaseException):
    """Raised from a signal handler so that ``finally`` blocks (snapshot removal) run.

    A ``BaseException``, as borg's ``SignalException`` is, and not a :class:`VcbProxyError`:
    the handlers that turn a failure into "try the next mode", "a warning" or "a problem in
    the report" catch ``VcbProxyError`` or ``Exception``, and must never swallow a Ctrl-C
    (the first signal handler ignores later signals, so a swallowed one is lost for good).
    """

    def __init__(self, signum: int):
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signal_name}; cleanup done")
        self.signum = signum
        self.exit_code = SIGINT if signum == signal.SIGINT else SIGTERM

    def cleanup_failed(self, what: str) -> None:
        """Say what the cleanup could not do, instead of "cleanup done"."""
        self.args = (f"interrupted by {self.signal_name}; cleanup incomplete: {what}",)


def amend(exc: BaseException, what: str) -> None:
    """Add ``what`` (something the cleanup after ``exc`` could not do) to the one-line message
    of ``exc``, which keeps its class and exit code."""
    if isinstance(exc, Interrupted):
        exc.cleanup_failed(what)
    else:
        exc.args = (f"{exc}; {what}",)


def severity(code: int) -> int:
    """How bad an exit code is: 0, then 3 (done with warnings), then every failure, the higher
    code the more specific (the signals last)."""
    return 0 if code == OK else 1 if code == WARNINGS else 2 + code


def worst(codes: Iterable[int]) -> int:
    """The exit code of a run made of several (VMs of one mount, tools of one VCB call):
    the most severe of ``codes``; 0 when there are none."""
    return max(codes, key=severity, default=OK)


@dataclass
class Outcome:
    """What a job ended with, borg-style: the warnings it collected along the way (done, but
    exit 3) or the error that stopped it. Job results extend it; :meth:`warn` is the one way
    a job reports a warning."""

    warnings: list[str] = field(default_factory=list, kw_only=True)
    error: VcbProxyError | None = field(default=None, kw_only=True)

    def warn(self, message: str, log: logging.Logger | None = None) -> None:
        """Log ``message`` as a warning now and keep it for the summary and the exit code."""
        (log or logging.getLogger("vcbproxy")).warning("%s", message)
        self.warnings.append(message)

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        return WARNINGS if self.warnings else OK
