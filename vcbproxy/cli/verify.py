"""``vcbproxy verify`` — prove an export or a CBT repository intact without restoring it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vcbproxy import errors
from vcbproxy.cli.paths import WorkingDirPath
from vcbproxy.jobs.verify import verify_export, verify_repository


@click.command("verify")
@click.argument("directory", required=False, type=WorkingDirPath(file_okay=False, path_type=Path))
@click.option(
    "--repo",
    "repo",
    type=WorkingDirPath(file_okay=False, path_type=Path),
    help="Check a CBT repository instead of an export directory.",
)
@click.option(
    "--no-qemu-img", is_flag=True, help="Skip the independent 'qemu-img check' of each VMDK."
)
@click.option("--json", "json_output", is_flag=True, help="Print the result as one JSON object.")
def verify(directory, repo, no_qemu_img, json_output):
    """Check every manifest hash, every file, each VMDK and the catalog of an export DIRECTORY.

    Each problem is printed on its own line, naming the file; any problem exits 16.
    """
    if (directory is None) == (repo is None):
        raise errors.UsageError("give either an export DIRECTORY or --repo DIR")
    report = (
        verify_repository(repo)
        if repo is not None
        else verify_export(directory, qemu_img=not no_qemu_img)
    )
    if json_output:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        for problem in report.problems:
            click.echo(problem)
        for note in report.notes:
            click.echo(f"{report.directory}: note: {note}", err=True)
        if report.ok:
            click.echo(
                f"{report.directory}: ok ({report.checked_files} files, {report.checked_disks} disks"
                + (", qemu-img check" if report.qemu_img else "")
                + ")",
                err=True,
            )
    if not report.ok:
        if not json_output:
            click.echo(
                f"vcbproxy: error: {report.directory}: {len(report.problems)} problem(s)", err=True
            )
        return errors.VERIFY
    return errors.OK
