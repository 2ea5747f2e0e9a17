"""The ``vcbproxy`` command line: a thin click layer over ``vcbproxy.jobs``.

Every command module exposes one click command or group; this module wires them into
the root group and turns :class:`vcbproxy.errors.VcbProxyError` into a one-line
message and the documented exit code (never a traceback).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import MutableMapping

import click

from vcbproxy import __version__, errors
from vcbproxy.lines import OneLineFormatter, escape

EPILOG = "Exit codes: " + ", ".join(f"{code} {name}" for code, name in errors.EXIT_CODES.items())

# Command name -> "module:attribute". A run imports only its own command's module: importing
# every job (CBT repository, restore, the lab, ...) took ~100 ms of each run's fixed cost.
COMMANDS = {
    "vms": "vcbproxy.cli.vms:vms",
    "mount": "vcbproxy.cli.mount:mount",
    "unmount": "vcbproxy.cli.mount:unmount",
    "snapshot": "vcbproxy.cli.snapshot:snapshot",
    "cbt": "vcbproxy.cli.cbt:cbt",
    "backup": "vcbproxy.cli.cbt:backup",
    "restore-point": "vcbproxy.cli.cbt:restore_point",
    "compare": "vcbproxy.cli.cbt:compare",
    "lab": "vcbproxy.cli.lab:lab",
    "verify": "vcbproxy.cli.verify:verify",
    "restore": "vcbproxy.cli.restore:restore",
    "fleet": "vcbproxy.cli.fleet:fleet",
}


class LazyGroup(click.Group):
    """A group whose commands are imported when asked for (click's documented lazy-loading
    pattern); ``commands`` still lists them all, loading them, for help and introspection."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs):
        self._lazy = dict(lazy)
        self._loaded: dict[str, click.Command] = {}
        super().__init__(*args, **kwargs)

    @property
    def commands(self) -> MutableMapping[str, click.Command]:
        for name in self._lazy:
            self._load(name)
        return self._loaded

    @commands.setter
    def commands(self, value) -> None:
        self._loaded = dict(value or {})

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name
        if name is None:
            raise TypeError("Command has no name.")
        self._loaded[name] = cmd

    def list_commands(self, ctx) -> list[str]:
        return sorted({*self._loaded, *self._lazy})

    def get_command(self, ctx, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name) if cmd_name in self._lazy else self._loaded.get(cmd_name)

    def _load(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, _, attribute = self._lazy[name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            if command.name != name:  # a table entry out of step with its command
                raise RuntimeError(f"{self._lazy[name]} is command {command.name!r}, not {name!r}")
            self._loaded[name] = command
        return self._loaded[name]


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EPILOG,
)
@click.version_option(__version__, prog_name="vcbproxy")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More log output on stderr (-vv: debug, and the traceback of an error).",
)
def cli(verbose: int) -> None:
    """VCB-style backup proxy for vSphere: snapshot a VM, copy it whole to staging,
    hand off to backup software through hooks, then clean up.

    Passwords are read from VCBPROXY_PASSWORD, --password-file or a prompt, never argv.
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="vcbproxy: %(levelname)s: %(message)s"
    )
    # The run log in an export directory lowers vcbproxy's logger to INFO; the terminal keeps -v's level.
    for handler in logging.getLogger().handlers:
        handler.setLevel(max(level, logging.DEBUG))
        if type(handler) is logging.StreamHandler:  # basicConfig's stderr, not a host's own
            # A VM name holding a newline must not split a log line in two (vcbproxy.lines).
            handler.setFormatter(OneLineFormatter("vcbproxy: %(levelname)s: %(message)s"))
    # pyVmomi and urllib3 are chatty at INFO; their detail belongs in -vv only.
    for noisy in ("urllib3", "paramiko"):
        logging.getLogger(noisy).setLevel(max(level, logging.DEBUG) + 10)


def main(argv: list[str] | None = None) -> None:
    try:
        rv = cli.main(args=argv, prog_name="vcbproxy", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("vcbproxy: aborted", err=True)
        sys.exit(errors.SIGINT)
    except click.ClickException as exc:
        exc.show()
        sys.exit(errors.USAGE if exc.exit_code == 2 else exc.exit_code)
    except errors.VcbProxyError as exc:
        # -vv: where it came from (the library error it translates), for a bug report.
        logging.getLogger("vcbproxy").debug("traceback of the error below", exc_info=True)
        click.echo(f"vcbproxy: error: {escape(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except errors.Interrupted as exc:
        click.echo(f"vcbproxy: error: {escape(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("vcbproxy: interrupted", err=True)
        sys.exit(errors.SIGINT)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        logging.getLogger("vcbproxy").debug("unexpected failure", exc_info=True)
        click.echo(
            f"vcbproxy: error: unexpected failure: {type(exc).__name__}: {escape(str(exc))} "
            f"(a bug; run with -vv for the traceback)",
            err=True,
        )
        sys.exit(errors.FAILURE)
    # Commands return an int exit code (e.g. 3 when done with warnings) or None for 0.
    sys.exit(rv if isinstance(rv, int) else errors.OK)
