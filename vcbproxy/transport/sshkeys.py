"""SSH host keys, checked against a known_hosts file.

An unknown key is refused unless it is pinned by ``ssh_fingerprint`` (``SHA256:...`` as
ssh-keygen prints it) or ``ssh_accept_new`` is set (then it is recorded, like OpenSSH's
``accept-new``); a changed key is always refused.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

import paramiko

from vcbproxy import errors
from vcbproxy.transport.retry import describe

log = logging.getLogger(__name__)


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64>`` exactly as ``ssh-keygen -lf`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class HostKeyChecker:
    """known_hosts (RejectPolicy) + optional fingerprint pin + optional accept-new."""

    def __init__(self, *, known_hosts: str | None, pinned: str | None, accept_new: bool):
        self.path = (
            Path(known_hosts).expanduser()
            if known_hosts
            else Path("~/.ssh/known_hosts").expanduser()
        )
        self.pinned = pinned.strip() if pinned else None
        self.accept_new = accept_new
        self._lock = threading.Lock()

    def _entry_name(self, host: str, port: int) -> str:
        return host if port == 22 else f"[{host}]:{port}"

    def check(self, host: str, port: int, key: paramiko.PKey) -> None:
        name = self._entry_name(host, port)
        actual = fingerprint(key)
        with self._lock:
            known = paramiko.HostKeys()
            if self.path.is_file():
                try:
                    known.load(str(self.path))
                except (OSError, paramiko.SSHException) as exc:
                    raise errors.ConnectionFailure(
                        f"cannot read known_hosts file {self.path}: {describe(exc)}"
                    ) from exc
            entries: Mapping[str, paramiko.PKey] = known.lookup(name) or {}
            if self.pinned:
                if self.pinned.rstrip("=") != actual:
                    raise errors.ConnectionFailure(
                        f"SSH host key of {name} is {key.get_name()} {actual}, not the pinned "
                        f"{self.pinned}"
                    )
                return
            stored = entries.get(key.get_name())
            if stored is not None:
                if stored.asbytes() == key.asbytes():
                    return
                raise errors.ConnectionFailure(
                    f"SSH host key of {name} CHANGED: the server offers {key.get_name()} {actual}, "
                    f"{self.path} has {fingerprint(stored)}; refusing (possible "
                    f"man-in-the-middle). If the host was reinstalled, remove the old entry"
                )
            if entries:
                # Known host, but with other key types only: treat like a changed key.
                raise errors.ConnectionFailure(
                    f"SSH host key of {name} ({key.get_name()} {actual}) does not match the "
                    f"{', '.join(entries.keys())} key(s) recorded in {self.path}; refusing"
                )
            if not self.accept_new:
                raise errors.ConnectionFailure(
                    f"SSH host key of {name} is unknown ({key.get_name()} {actual}, not in "
                    f"{self.path}); verify it and pin it with --ssh-fingerprint {actual}, "
                    f"or record it with --ssh-accept-new"
                )
            self._record(name, key)
            log.warning(
                "recorded new SSH host key of %s (%s %s) in %s",
                name,
                key.get_name(),
                actual,
                self.path,
            )

    def _record(self, name: str, key: paramiko.PKey) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="ascii") as f:
                f.write(f"{name} {key.get_name()} {key.get_base64()}\n")
        except OSError as exc:
            raise errors.ConnectionFailure(
                f"cannot record the SSH host key in {self.path}: {exc.strerror}"
            ) from exc
