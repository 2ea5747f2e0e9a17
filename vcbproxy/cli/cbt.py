"""``vcbproxy cbt``, ``backup``, ``restore-point``: changed-block-tracking backup, the vStorage way."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vcbproxy import errors
from vcbproxy.cli.options import (
    VmFlag,
    output_options,
    progress_mode,
    server_options,
    transport_options,
    vm_option,
)
from vcbproxy.cli.paths import WorkingDirPath
from vcbproxy.jobs import cbt as cbt_job
from vcbproxy.jobs.backup import BackupOptions
from vcbproxy.jobs.backup import backup as do_backup
from vcbproxy.jobs.compare import CompareOptions, check_chart, render_table, write_reports
from vcbproxy.jobs.compare import compare as do_compare
from vcbproxy.jobs.connection import connect
from vcbproxy.jobs.restore_point import restore_point as do_restore_point
from vcbproxy.jobs.signals import signals_raise
from vcbproxy.lines import escape
from vcbproxy.progress import Progress
from vcbproxy.vmdk.writers import FORMATS


@click.group("cbt")
def cbt() -> None:
    """Changed block tracking of a VM: enable, disable, status."""


def _tracking(vm: VmFlag, server, enabled: bool | None) -> None:
    with connect(server()) as session:
        ref = vm.resolve(session)
        disks = (
            cbt_job.status(session, ref)
            if enabled is None
            else cbt_job.set_tracking(session, ref, enabled)
        )
    for disk in disks:
        state = disk.change_id or ("independent: not tracked" if disk.independent else "off")
        click.echo(f"{escape(ref.name)} {disk.device_id} ({disk.label}): {state}")


@cbt.command("enable")
@vm_option
@server_options
def enable(vm, server):
    """Turn CBT on (reconfigure, then a snapshot cycle so it takes effect) and show the change IDs."""
    _tracking(vm, server, True)


@cbt.command("disable")
@vm_option
@server_options
def disable(vm, server):
    """Turn CBT off; the next backup of this VM will be a full read."""
    _tracking(vm, server, False)


@cbt.command("status")
@vm_option
@server_options
def status(vm, server):
    """Show each disk's current change ID (or that tracking is off)."""
    _tracking(vm, server, None)


@click.command("backup")
@vm_option
@click.option(
    "--repo",
    required=True,
    type=WorkingDirPath(file_okay=False, path_type=Path),
    help="Repository directory (created on first use).",
)
@click.option(
    "-m",
    "--mode",
    default="nbdssl",
    show_default=True,
    metavar="MODE[:MODE...]",
    help="Transport, as for mount.",
)
@click.option(
    "--quiesce/--no-quiesce",
    default=None,
    help="Quiesce the guest for the snapshot [default: when VMware Tools runs].",
)
@click.option(
    "--fallback/--no-fallback",
    default=True,
    show_default=True,
    help="When the stored change ID is rejected (tracking reset): read the whole disk with a "
    "warning (exit 3), or fail.",
)
@click.option(
    "--preexisting-snapshot",
    type=click.Choice(["fail", "delete"]),
    default="fail",
    show_default=True,
)
@transport_options
@output_options
@server_options
def backup(
    vm,
    repo,
    mode,
    quiesce,
    fallback,
    preexisting_snapshot,
    transport,
    json_output,
    quiet,
    server,
):
    """Back up a VM into a CBT repository: the first run reads the allocated areas, later runs
    only what changed since the previous run's change ID."""
    spec = server()
    options = BackupOptions(
        repo=repo,
        mode=mode,
        transport_options=transport(spec),
        quiesce=quiesce,
        fallback=fallback,
        preexisting_snapshot=preexisting_snapshot,
    )
    progress = Progress.create(progress_mode(json_output, quiet))
    try:
        with signals_raise(), connect(spec) as session:
            result = do_backup(session, vm.resolve(session), options, progress)
    finally:
        progress.close()
    summary = {
        "vm": result.vm.name,
        "run": result.run,
        "path": str(result.path),
        "kinds": result.kinds,
        "bytes_read": result.bytes_read,
        "changed_bytes": result.changed_bytes,
        "bytes_written": result.bytes_written,
        "seconds": round(result.seconds, 3),
        "snapshot_seconds": round(result.snapshot_seconds, 3),
        "warnings": result.warnings,
    }
    if json_output:
        click.echo(json.dumps(summary))
    elif not quiet:
        kinds = ", ".join(f"{d} {k}" for d, k in result.kinds.items())
        click.echo(
            f"{result.vm.name}: run {result.run} ({kinds}), {result.bytes_read} bytes read, "
            f"{result.bytes_written} written, {result.seconds:.1f} s",
            err=True,
        )
    for w in result.warnings:
        click.echo(f"vcbproxy: warning: {escape(w)}", err=True)
    return result.exit_code


@click.command("restore-point")
@click.option(
    "--repo", required=True, type=WorkingDirPath(file_okay=False, exists=True, path_type=Path)
)
@click.option(
    "--run", "run_number", required=True, type=click.IntRange(1), help="Run number to rebuild."
)
@click.option(
    "--out",
    required=True,
    type=WorkingDirPath(file_okay=False, path_type=Path),
    help="New directory for the disks and the VM's config.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="flat", show_default=True)
@click.option("--vm", help="VM name or uuid, when the repository holds several.")
def restore_point(repo, run_number, out, fmt, vm):
    """Rebuild every disk of a VM as of run N of a CBT repository."""
    result = do_restore_point(repo, run_number, out, fmt=fmt, vm=vm)
    for device, disk in result.disks.items():
        click.echo(f"{device}: {disk['files'][0]} sha256 {disk['sha256']}")


@click.command("compare")
@vm_option
@click.option(
    "--runs", type=click.IntRange(1), default=3, show_default=True, help="Backup runs of each kind."
)
@click.option(
    "--churn",
    "churn_percent",
    type=float,
    default=0.0,
    show_default=True,
    metavar="PERCENT",
    help="Guest writes between runs, in % of each disk (lab only: needs --lab-info).",
)
@click.option(
    "--lab-info",
    type=click.File("r"),
    envvar="VCBPROXY_LAB_INFO",
    help="The JSON line 'vcbproxy lab serve' printed, to write into the guest between runs.",
)
@click.option(
    "--workdir",
    type=WorkingDirPath(file_okay=False, path_type=Path),
    required=True,
    help="Where the full exports (removed after each run), the CBT repository and the reports go.",
)
@click.option("-m", "--mode", default="nbdssl", show_default=True, metavar="MODE[:MODE...]")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="2gbsparse",
    show_default=True,
    help="Format of the full exports.",
)
@click.option(
    "--no-chart",
    is_flag=True,
    help="Skip the PNG chart, which needs matplotlib (pip install 'vcbproxy[chart]').",
)
@transport_options
@output_options
@server_options
def compare(
    vm,
    runs,
    churn_percent,
    lab_info,
    workdir,
    mode,
    fmt,
    no_chart,
    transport,
    json_output,
    quiet,
    server,
):
    """Full VCB-style export against CBT backup of the same VM states, run by run.

    Reports bytes read from the host, bytes written, backup window and time on a snapshot,
    as a table, WORKDIR/compare.csv, compare.json and compare.png.
    """
    if not no_chart:
        check_chart()
    churn = None
    if churn_percent:
        if lab_info is None:
            raise errors.UsageError(
                "--churn writes into the guest through the lab: give --lab-info"
            )
        from vcblab.client import LabClient  # the lab: only for --churn, never otherwise

        try:
            lab = LabClient(json.loads(lab_info.readline()))
            churn = lab.churn_bytes
        except (ValueError, TypeError, KeyError) as exc:
            raise errors.UsageError(
                f"--lab-info {lab_info.name} is not the JSON line 'vcbproxy lab serve' "
                f"prints ({exc})"
            ) from exc
    if workdir.exists() and any(workdir.iterdir()):
        raise errors.StagingError(f"{workdir} is not empty; compare needs a fresh directory")
    spec = server()
    options = CompareOptions(
        runs=runs,
        workdir=workdir,
        mode=mode,
        fmt=fmt,
        transport_options=transport(spec),
        churn_percent=churn_percent,
        churn=churn,
    )
    progress = Progress.create(progress_mode(json_output, quiet))
    try:
        with signals_raise(), connect(spec) as session:
            rows = do_compare(session, vm.resolve(session), options, progress)
    finally:
        progress.close()
    paths = write_reports(rows, workdir, chart=not no_chart)
    if json_output:
        click.echo(paths["json"].read_text())
    else:
        click.echo(render_table(rows))
        click.echo("reports: " + ", ".join(str(p) for p in paths.values()), err=True)
