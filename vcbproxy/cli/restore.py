"""``vcbproxy restore`` — put an exported VM back into vSphere (vcbRestore)."""

from __future__ import annotations

from pathlib import Path

import click

from vcbproxy import errors
from vcbproxy.cli.options import output_options, progress_mode, server_options
from vcbproxy.cli.paths import WorkingDirPath
from vcbproxy.jobs.connection import connect
from vcbproxy.jobs.restore import RestoreOptions
from vcbproxy.jobs.restore import restore as do_restore
from vcbproxy.jobs.signals import signals_raise
from vcbproxy.lines import escape
from vcbproxy.progress import Progress


@click.command("restore")
@click.option(
    "-s",
    "--source",
    type=WorkingDirPath(file_okay=False, exists=True, path_type=Path),
    help="The export directory written by 'vcbproxy mount'.",
)
@click.option(
    "--repo",
    type=WorkingDirPath(file_okay=False, exists=True, path_type=Path),
    help="Restore from a CBT repository instead (with --run N).",
)
@click.option("--run", "run_number", type=int, metavar="N", help="The repository run to restore.")
@click.option(
    "--repo-vm", metavar="UUID|NAME", help="Which VM of the repository, when it holds several."
)
@click.option(
    "--name", metavar="NAME", help="Name of the restored VM [default: the exported VM's name]."
)
@click.option(
    "--datastore", metavar="DS", help="Datastore to upload to [default: the VM's original one]."
)
@click.option(
    "--datacenter",
    metavar="PATH",
    help="Inventory path of the datacenter of --datastore (e.g. emea/dc2), needed when several "
    "datacenters have a datastore of that name [default: the only one that has it, else the "
    "VM's own].",
)
@click.option(
    "--folder", metavar="PATH", help="Inventory path of the VM folder [default: the datacenter's]."
)
@click.option("--resource-pool", metavar="PATH", help="Inventory path of the resource pool.")
@click.option("--host", metavar="HOST", help="Host to register the VM on.")
@click.option(
    "-b",
    "--behavior",
    "policy",
    type=click.Choice(["keep", "overwrite"]),
    default="keep",
    show_default=True,
    help="keep: refuse an existing VM or file of that name; overwrite: replace the VM of the "
    "same name once every file is uploaded (the old VM is unregistered, put back if the new "
    "one fails to register, and its files deleted only after the new one is registered).",
)
@click.option("--power-on", is_flag=True, help="Power the VM on once it is registered.")
@click.option(
    "--no-verify", is_flag=True, help="Skip verifying the export before uploading (not advised)."
)
@output_options
@server_options
def restore(
    source,
    repo,
    run_number,
    repo_vm,
    name,
    datastore,
    datacenter,
    folder,
    resource_pool,
    host,
    policy,
    power_on,
    no_verify,
    json_output,
    quiet,
    server,
):
    """Verify an export (or a CBT repository run, rebuilt first), upload its disks (as VMFS
    descriptor + flat extent), .vmx, .nvram and vmware.log through the datastore file service,
    register the VM and optionally power it on.

    A failed restore deletes what it uploaded (and the folder it created) and leaves an existing
    VM registered and untouched.
    """
    if (source is None) == (repo is None):
        raise errors.UsageError("give either -s DIR (an export) or --repo DIR --run N")
    if repo is not None and run_number is None:
        raise errors.UsageError("--repo needs --run N")
    spec = server()
    options = RestoreOptions(
        source=source,
        repo=repo,
        run=run_number,
        repo_vm=repo_vm,
        name=name,
        datastore=datastore,
        datacenter=datacenter,
        folder=folder,
        resource_pool=resource_pool,
        host=host,
        policy=policy,
        power_on=power_on,
        timeout=spec.timeout,
        verify=not no_verify,
    )
    progress = Progress.create(progress_mode(json_output, quiet))
    try:
        with signals_raise(), connect(spec) as session:
            result = do_restore(session, options, progress)
    finally:
        progress.close()
    if not quiet and not json_output:
        click.echo(
            f"{escape(result.vm.name)}: restored as {result.vm.moref} from {result.vmx_path}"
            + (f", replacing {result.replaced.moref}" if result.replaced else ""),
            err=True,
        )
    for warning in result.warnings:
        click.echo(f"vcbproxy: warning: {escape(warning)}", err=True)
    return result.exit_code
