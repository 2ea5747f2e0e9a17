"""The console scripts of VCB's tools: ``vcbMounter``, ``vcbVmName``, ``vcbSnapshot``,
``vcbRestore``, ``vcbCleanup``, ``vcbproxy-pre-command`` and ``vcbproxy-post-command``.

VCB took ``-p PASSWORD``. A process's argv is readable by every local user
(``/proc/<pid>/cmdline``, ``ps``) for as long as it runs, and a backup job runs for hours.
So before anything else, a tool given ``-p`` moves the password into its environment
(``VCBPROXY_PASSWORD``, readable only by its own user) and re-executes itself without it:
only the first moments of the process, before the re-exec, show the password.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import NoReturn

from vcbproxy.compat import prepost, vcb
from vcbproxy.compat.flags import without_password

PASSWORD_ENV = "VCBPROXY_PASSWORD"
PASSWORD_FILE_ENV = "VCBPROXY_PASSWORD_FILE"


def _reexec(tail: list[str]) -> NoReturn:
    """Run this same program again, as it was started (interpreter options, script or
    ``-m module``), with ``tail`` instead of ``sys.argv[1:]``."""
    start = sys.orig_argv[: len(sys.orig_argv) - (len(sys.argv) - 1)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [*start, *tail])


def password_out_of_argv(tool: str, args: list[str], head: list[str] | None = None) -> None:
    """Re-exec without ``-p PASSWORD`` when ``args`` hold one; return when they do not.

    ``head`` comes before the tool's own arguments in ``sys.argv[1:]`` (the tool's name, for
    ``python -m vcbproxy.compat TOOL``)."""
    rest, password = without_password(tool, args)
    if password is None:
        return
    os.environ[PASSWORD_ENV] = password
    # An explicit -p beats a password file from the environment or the config.
    os.environ.pop(PASSWORD_FILE_ENV, None)
    _reexec([*(head or []), *rest])


def run(tool: str, args: list[str]) -> int:
    """One tool run in this process; its exit code."""
    if tool in ("pre-command", "post-command"):
        return prepost.run(tool, args)
    return vcb.run(tool, args)


def _main(tool: str) -> NoReturn:
    args = sys.argv[1:]
    password_out_of_argv(tool, args)
    sys.exit(run(tool, args))


# The console scripts (setup.cfg [options.entry_points]), one per tool.
vcb_mounter = functools.partial(_main, "vcbMounter")
vcb_vm_name = functools.partial(_main, "vcbVmName")
vcb_snapshot = functools.partial(_main, "vcbSnapshot")
vcb_restore = functools.partial(_main, "vcbRestore")
vcb_cleanup = functools.partial(_main, "vcbCleanup")
pre_command = functools.partial(_main, "pre-command")
post_command = functools.partial(_main, "post-command")
