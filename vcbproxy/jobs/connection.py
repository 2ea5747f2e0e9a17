"""Turning what the user gave (options, environment, files) into a vSphere session.

Passwords come from the environment, a file, or a prompt, never from argv; this module
is the one place that reads them, so the rule is enforced in one spot.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from vcbproxy import errors
from vcbproxy.models import ServerSpec

PASSWORD_ENV = "VCBPROXY_PASSWORD"


def read_password(*, password_file: str | None, prompt_for: str | None = None) -> str:
    """The password from ``--password-file``, ``$VCBPROXY_PASSWORD`` or a TTY prompt."""
    if password_file:
        try:
            text = Path(password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise errors.UsageError(
                f"cannot read password file {password_file}: {exc.strerror}"
            ) from exc
        # Only the first line counts: files written with `echo` end in a newline.
        return text.splitlines()[0] if text else ""
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        return env
    if prompt_for and sys.stdin.isatty():
        return getpass.getpass(f"Password for {prompt_for}: ")
    raise errors.AuthError(
        f"no password given: set {PASSWORD_ENV}, use --password-file, or run on a terminal to be prompted"
    )


def connect(spec: ServerSpec):
    """Open a :class:`vcbproxy.vsphere.session.Session` (a context manager)."""
    from vcbproxy.vsphere.session import Session  # pyVmomi: only when talking to a server

    if not spec.server:
        raise errors.UsageError("no server given: use --server or set VCBPROXY_SERVER")
    if not spec.user:
        raise errors.UsageError("no user given: use --user or set VCBPROXY_USER")
    return Session.connect(spec)
