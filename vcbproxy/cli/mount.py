"""``vcbproxy mount`` / ``unmount`` — vcbMounter -t fullvm and vcbMounter -U."""

from __future__ import annotations

from pathlib import Path

import click

from vcbproxy import errors
from vcbproxy.cli.options import (
    output_options,
    progress_mode,
    server_options,
    transport_options,
    vm_option,
)
from vcbproxy.cli.paths import WorkingDirPath
from vcbproxy.hooks import Hook, parse_hook
from vcbproxy.jobs.connection import connect
from vcbproxy.jobs.export import ExportOptions, export
from vcbproxy.jobs.signals import signals_raise
from vcbproxy.jobs.unmount import unmount as do_unmount
from vcbproxy.lines import escape
from vcbproxy.progress import Progress
from vcbproxy.vmdk.writers import FORMATS


@click.command("mount")
@vm_option
@click.option(
    "-r",
    "--dir",
    "target",
    required=True,
    type=WorkingDirPath(file_okay=False, path_type=Path),
    help="Export directory. Several VMs (any, powerstate:) go to DIR/<vm>-fullVM each.",
)
@click.option(
    "-t",
    "--type",
    "export_type",
    type=click.Choice(["fullvm", "file"]),
    default="fullvm",
    show_default=True,
    help="fullvm copies the whole VM; file-level mount is not offered.",
)
@click.option(
    "-m",
    "--mode",
    default="nbdssl",
    show_default=True,
    metavar="MODE[:MODE...]",
    help="Transport: nbdssl (HTTPS file service), nbd (plain HTTP), san, ssh, nfc; "
    "a chain like san:nbdssl falls back per disk.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="2gbsparse",
    show_default=True,
    help="2gbsparse: VCB's split sparse; monolithic: one sparse file per disk; "
    "flat: descriptor + raw extent with holes; stream: streamOptimized.",
)
@click.option(
    "--quiesce/--no-quiesce",
    default=None,
    help="Quiesce the guest file systems for the snapshot [default: when VMware Tools runs].",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(1, 32),
    default=1,
    show_default=True,
    help="VMs exported at once when the selector matches several.",
)
@click.option(
    "--preexisting-mountpoint",
    type=click.Choice(["fail", "delete"]),
    default="fail",
    show_default=True,
    help="When DIR exists: fail, or delete it (only if it is an export).",
)
@click.option(
    "--preexisting-snapshot",
    type=click.Choice(["fail", "delete"]),
    default="fail",
    show_default=True,
    help="When the VM already has a _VCB-BACKUP_ snapshot: fail, or remove it.",
)
@click.option(
    "--fail-on-independent",
    is_flag=True,
    help="Fail instead of skipping (exit 3) independent disks, which cannot be snapshotted.",
)
@click.option(
    "--read-all-blocks",
    is_flag=True,
    help="Read every block of each disk. By default, when changed block tracking was on "
    "at the snapshot, only the areas the host reports allocated are read (the rest "
    "are zeros), as VADP backups do.",
)
@click.option(
    "--checksum",
    type=click.Choice(["sha256", "none"]),
    default="sha256",
    show_default=True,
    help="sha256: hash every disk's content while copying, for MANIFEST.sha256, "
    "vcbproxy.json and 'vcbproxy verify'. none: do not hash the disks (they are "
    "left out of the manifest; verify then checks their structure only); the "
    "copy is then bound by the storage, not by SHA-256 (about 1.5-2 GB/s per core).",
)
@click.option(
    "--pre-command", metavar="'CMD ARGS'", help="Run before the snapshot; failure aborts (exit 17)."
)
@click.option(
    "--post-command",
    metavar="'CMD ARGS'",
    help="Run after the export; failure is a warning (exit 3).",
)
@click.option(
    "--hook-timeout", type=float, default=600, show_default=True, help="Seconds a hook may run."
)
@transport_options
@output_options
@server_options
def mount(
    vm,
    target,
    export_type,
    mode,
    fmt,
    quiesce,
    jobs,
    preexisting_mountpoint,
    preexisting_snapshot,
    fail_on_independent,
    read_all_blocks,
    checksum,
    pre_command,
    post_command,
    hook_timeout,
    transport,
    json_output,
    quiet,
    server,
):
    """Snapshot a VM, copy it whole into DIR as it was at the snapshot, remove the snapshot.

    DIR then holds the .vmx (naming the exported disks), .nvram, logs, every disk, a VCB
    catalog, MANIFEST.sha256, vcbproxy.json and the run's log. The snapshot is removed on
    every path, including errors, Ctrl-C and SIGTERM.
    """
    if export_type == "file":
        raise errors.UnsupportedError(
            "-t file (file-level mount of a guest file system) is not offered; use -t fullvm"
        )
    spec = server()
    options = ExportOptions(
        target=target,
        mode=mode,
        fmt=fmt,
        quiesce=quiesce,
        jobs=jobs,
        preexisting_mountpoint=preexisting_mountpoint,
        preexisting_snapshot=preexisting_snapshot,
        fail_on_independent=fail_on_independent,
        allocation_map=not read_all_blocks,
        checksum=checksum,
        pre_command=Hook(parse_hook(pre_command), hook_timeout) if pre_command else None,
        post_command=Hook(parse_hook(post_command), hook_timeout) if post_command else None,
        transport_options=transport(spec),
    )
    progress = Progress.create(progress_mode(json_output, quiet))
    try:
        with signals_raise(), connect(spec) as session:
            results = export(session, vm.selector, options, progress)
    finally:
        progress.close()
    for res in results:
        if res.error is not None:
            click.echo(
                f"vcbproxy: error: {escape(res.vm.name)}: {escape(str(res.error))}", err=True
            )
        elif not quiet and not json_output:
            click.echo(
                f"{escape(res.vm.name)}: exported to {res.directory}"
                + (f" with {len(res.warnings)} warning(s)" if res.warnings else ""),
                err=True,
            )
    return errors.worst(res.exit_code for res in results)


@click.command("unmount")
@click.option(
    "-r",
    "--dir",
    "target",
    required=True,
    type=WorkingDirPath(file_okay=False, path_type=Path),
    help="The export directory given to mount.",
)
@vm_option(
    required=False,
    help="Also remove this VM's _VCB-BACKUP_ snapshots whose owner is gone, even when DIR "
    "is already gone (the post-command does, after a crash).",
)
@server_options
def unmount(target, vm, server):
    """Remove an export and any _VCB-BACKUP_ snapshot its VM still carries (vcbMounter -U).

    Safe to run twice. A directory that is not a vcbproxy export is refused, not deleted;
    an unfinished one (a crashed job's) is removed with its snapshot once its job is gone,
    and refused (exit 15) while that job runs. A snapshot is removed only when its owner is
    provably gone (README: "Whose snapshot is it?"): one of a job still running is kept.
    """
    with signals_raise():
        selector = vm.selector if vm else None
        result = do_unmount(lambda: connect(server()), target, selector)
    if result.already_gone:
        click.echo(f"{target}: nothing to unmount", err=True)
    for snap in result.removed_snapshots:
        click.echo(f"removed snapshot {snap}", err=True)
    for d in result.removed_dirs:
        click.echo(f"removed {d}", err=True)
