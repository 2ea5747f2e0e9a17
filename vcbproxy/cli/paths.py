"""Path arguments taken relative to the working directory, and made absolute at once.

A path the user typed means the working directory the command started in. Kept relative, it
is read against another base as soon as some code joins it to itself (an export directory
and a file in it), hands it to a hook or a child process that runs elsewhere, or writes it
into a record read later. So every path option and argument of every command is made
absolute as it is parsed, the one place all of them pass through.

Only absolute, never resolved: symbolic links stay as given, because the staging checks must
still see (and refuse) an export directory that is a link, and ``..`` is left to the kernel,
which follows it after the link as the user's shell would.
"""

from __future__ import annotations

import os
from pathlib import Path

import click


class WorkingDirPath(click.Path):
    """:class:`click.Path` whose value is absolute: the working directory joined to a relative one."""

    def convert(self, value, param, ctx):
        converted = super().convert(value, param, ctx)
        if isinstance(converted, bytes):  # path_type=bytes: no command of ours asks for it
            converted = os.fsdecode(converted)
        if os.path.isabs(converted):
            return converted
        absolute = os.path.join(os.getcwd(), os.fspath(converted))
        return Path(absolute) if isinstance(converted, Path) else absolute
