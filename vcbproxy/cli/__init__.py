"""The ``vcbproxy`` command line: a thin click layer over ``vcbproxy.jobs``.

Every command module exposes one click command or group; this module wires them into
the root group and turns :class:`vcbproxy.errors.VcbProxyError` into a one-line
message and the documented exit code (never a traceback).
"""

from __future__ import annotations

import logging
import sys

import click

from vcbproxy import __version__, errors
from vcbproxy.cli import cbt as cbt_cmds
from vcbproxy.cli import fleet as fleet_cmds
from vcbproxy.cli import lab as lab_cmds
from vcbproxy.cli import mount as mount_cmds
from vcbproxy.cli import restore as restore_cmds
from vcbproxy.cli import snapshot as snapshot_cmds
from vcbproxy.cli import verify as verify_cmds
from vcbproxy.cli import vms as vms_cmds
from vcbproxy.lines import OneLineFormatter, escape

EPILOG = "Exit codes: " + ", ".join(f"{code} {name}" for code, name in errors.EXIT_CODES.items())


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
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


cli.add_command(vms_cmds.vms)
cli.add_command(mount_cmds.mount)
cli.add_command(mount_cmds.unmount)
cli.add_command(snapshot_cmds.snapshot)
cli.add_command(cbt_cmds.cbt)
cli.add_command(cbt_cmds.backup)
cli.add_command(cbt_cmds.restore_point)
cli.add_command(cbt_cmds.compare)
cli.add_command(lab_cmds.lab)
cli.add_command(verify_cmds.verify)
cli.add_command(restore_cmds.restore)
cli.add_command(fleet_cmds.fleet)


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
