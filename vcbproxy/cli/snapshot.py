"""``vcbproxy snapshot`` — vcbSnapshot: create, list, delete and sweep snapshots."""

from __future__ import annotations

import json

import click

from vcbproxy import errors
from vcbproxy.cli.options import server_options, vm_option
from vcbproxy.jobs import snapshots
from vcbproxy.jobs.connection import connect
from vcbproxy.lines import escape


@click.group("snapshot")
def snapshot() -> None:
    """Snapshots of VMs (vcbSnapshot): create, list, delete, sweep stale _VCB-BACKUP_ ones."""


@snapshot.command("create")
@vm_option
@click.option("-n", "--name", default="_VCB-BACKUP_", show_default=True)
@click.option("--description", default="")
@click.option("--quiesce/--no-quiesce", default=False, show_default=True)
@click.option("--memory/--no-memory", default=False, show_default=True)
@server_options
def create(vm, name, description, quiesce, memory, server):
    """Take a snapshot and print SsId:<moref> (vcbSnapshot -c)."""
    with connect(server()) as session:
        snap = snapshots.create(
            session,
            vm.resolve(session),
            name,
            description=description,
            memory=memory,
            quiesce=quiesce,
        )
    click.echo(f"SsId:{snap.moref}")


@snapshot.command("list")
@vm_option
@click.option("--json", "json_output", is_flag=True)
@server_options
def list_(vm, json_output, server):
    """List a VM's snapshots, oldest first (vcbSnapshot -l)."""
    with connect(server()) as session:
        ref = vm.resolve(session)
        snaps = snapshots.list_snapshots(session, ref)
    if json_output:
        click.echo(
            json.dumps(
                [
                    {
                        "ssid": s.moref,
                        "name": s.name,
                        "description": s.description,
                        "created": s.created,
                    }
                    for s in snaps
                ],
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    for s in snaps:
        click.echo(f"SsId:{s.moref}\nname:{escape(s.name)}\ncreated:{s.created}\n")
    if not snaps:
        click.echo(f"{escape(ref.name)} has no snapshots", err=True)


@snapshot.command("delete")
@vm_option
@click.argument("ssid")
@server_options
def delete(vm, ssid, server):
    """Remove the snapshot SSID of a VM (vcbSnapshot -d).

    An SSID the VM does not have (unknown, or already removed) is an error (exit 11),
    so a mistyped ID never passes for a successful delete.
    """
    with connect(server()) as session:
        snapshots.delete(session, vm.resolve(session), ssid)
    click.echo(f"removed SsId:{ssid}")


@snapshot.command("sweep")
@click.option(
    "--older-than",
    default="24h",
    show_default=True,
    metavar="AGE",
    help="Remove a snapshot whose owner cannot be checked from this proxy (another proxy's, "
    "or one with no owner record) once it is at least this old (s, m, h, d); 0: at any age.",
)
@click.option("-n", "--name", default="_VCB-BACKUP_", show_default=True)
@click.option("--dry-run", is_flag=True, help="List what would be removed.")
@server_options
def sweep(older_than, name, dry_run, server):
    """Find and remove stale backup snapshots across the whole inventory.

    Stale means the owner is provably gone (README: "Whose snapshot is it?"): a snapshot of
    a job that ended on this proxy goes at any age, one of a job still running here never.
    """
    age = snapshots.parse_age(older_than)
    with connect(server()) as session:
        items = snapshots.sweep(session, older_than=age, dry_run=dry_run, name=name)
    failed = 0
    for item in items:
        if item.kept:
            state = f"kept: {item.why}"
        elif dry_run:
            state = f"would remove: {item.why}"
        else:
            state = f"removed: {item.why}" if item.removed else f"FAILED: {item.error}"
        failed += bool(item.error)
        click.echo(
            f"{escape(item.vm.name)} ({item.vm.moref}) SsId:{item.snapshot.moref} age:{item.age}: "
            f"{escape(state)}"
        )
    if not [item for item in items if not item.kept]:
        click.echo("no stale snapshots", err=True)
    if failed:
        raise errors.SnapshotError(f"{failed} snapshot(s) could not be removed")
