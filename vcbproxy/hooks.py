"""Pre- and post-commands: how backup software is driven around an export.

A hook is an argv list run without a shell, in its own process group (so a timeout
kills the whole tree it started), with the job's context in ``VCBPROXY_*`` variables and
every secret-looking variable removed from the environment. Its output goes to the
log line by line. Whether a failure aborts or warns is the job's decision.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from vcbproxy.errors import HookError, UsageError

log = logging.getLogger(__name__)

PHASES = ("pre", "post")
SECRET_MARKERS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "API_KEY", "APIKEY")
KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL on timeout
OUTPUT_DRAIN = 2.0  # seconds to wait for output after the hook exited (a daemon may hold the pipe)


@dataclass
class Hook:
    argv: list[str]
    timeout: float = 600


def parse_hook(text: str) -> list[str]:
    """Split a ``--pre-command`` value into argv, as a POSIX shell would (but no shell runs it)."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot parse hook command {text!r}: {exc}") from exc
    if not argv:
        raise UsageError("empty hook command")
    return argv


def is_secret(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


def hook_environment(
    phase: str, context: dict[str, str], base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment a hook sees: ``base`` (os.environ) without secrets, plus VCBPROXY_PHASE and the context."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not is_secret(k)}
    for key, value in context.items():
        name = key if key.upper().startswith("VCBPROXY_") else f"VCBPROXY_{key.upper()}"
        if is_secret(name):
            continue
        env[name] = "" if value is None else str(value)
    env["VCBPROXY_PHASE"] = phase
    return env


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM to the hook's process group, SIGKILL after a grace period."""
    _kill_group(proc, signal.SIGTERM)
    try:
        proc.wait(KILL_GRACE)
    except subprocess.TimeoutExpired:
        pass
    # Also after the leader went: its children may ignore SIGTERM.
    _kill_group(proc, signal.SIGKILL)
    proc.wait()


def _pump(stream, label: str, level: int) -> None:
    with stream:
        for raw in iter(stream.readline, b""):
            log.log(level, "%s: %s", label, raw.decode("utf-8", "replace").rstrip("\r\n"))


def run_hook(hook: Hook, *, phase: str, context: dict[str, str]) -> None:
    """Run ``hook``; :class:`HookError` when it cannot start, exits non-zero, is killed or times out."""
    if phase not in PHASES:
        raise ValueError(f"hook phase must be one of {PHASES}, not {phase!r}")
    what = f"{phase}-command {hook.argv!r}"
    if not hook.argv:
        raise HookError(f"{phase}-command is empty")
    log.info("running %s", what)
    try:
        proc = subprocess.Popen(
            hook.argv,
            env=hook_environment(phase, context),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
    except FileNotFoundError as exc:
        raise HookError(f"{what}: {hook.argv[0]} not found") from exc
    except PermissionError as exc:
        raise HookError(f"{what}: {hook.argv[0]} is not executable") from exc
    except OSError as exc:
        raise HookError(f"{what} could not start: {exc.strerror or exc}") from exc
    pumps = [
        threading.Thread(
            target=_pump, args=(proc.stdout, f"{phase}-command", logging.INFO), daemon=True
        ),
        threading.Thread(
            target=_pump, args=(proc.stderr, f"{phase}-command [stderr]", logging.INFO), daemon=True
        ),
    ]
    for t in pumps:
        t.start()
    started = time.monotonic()
    try:
        returncode = proc.wait(hook.timeout)
    except subprocess.TimeoutExpired:
        _terminate(proc)
        raise HookError(
            f"{what} timed out after {hook.timeout:g} s; killed it and its children"
        ) from None
    except BaseException:
        # Ctrl-C/SIGTERM turned into an exception: do not leave the hook running behind us.
        _terminate(proc)
        raise
    finally:
        drain_until = time.monotonic() + OUTPUT_DRAIN
        for t in pumps:
            t.join(max(0.0, drain_until - time.monotonic()))
    log.info(
        "%s finished with exit code %d in %.1f s", what, returncode, time.monotonic() - started
    )
    if returncode < 0:
        raise HookError(f"{what} was killed by {signal.Signals(-returncode).name}")
    if returncode != 0:
        raise HookError(f"{what} exited {returncode}")
