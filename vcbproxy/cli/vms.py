"""``vcbproxy vms`` — vcbVmName: list the VMs a selector matches."""

from __future__ import annotations

import json

import click

from vcbproxy import errors
from vcbproxy.cli.options import server_options
from vcbproxy.jobs import inventory
from vcbproxy.jobs.connection import connect
from vcbproxy.lines import escape
from vcbproxy.selectors import VALID as SELECTOR_HELP
from vcbproxy.selectors import parse_selector


def vm_block(vm) -> str:
    # VCB's own keys and shape, so scripts that grep "moref:" keep working; one line per key
    # whatever the name holds (a newline is legal in a display name: vcbproxy.lines).
    return (
        f"Found VM:\nmoref:{escape(vm.moref)}\nname:{escape(vm.name)}\nuuid:{escape(vm.uuid)}\n"
        f"ipaddr:{escape(vm.ip_address or '')}\n"
    )


@click.command("vms")
@click.option("-s", "--selector", required=True, metavar="SELECTOR", help=SELECTOR_HELP)
@click.option("--json", "json_output", is_flag=True, help="One JSON array instead of VCB blocks.")
@server_options
def vms(selector: str, json_output: bool, server) -> None:
    """List the VMs SELECTOR matches (vcbVmName -s).

    any and powerstate: list every match. The other selectors name one VM: a name shared
    by two VMs is an error (exit 11) that lists their morefs, so the right one can be
    picked with moref:.
    """
    sel = parse_selector(selector)
    with connect(server()) as session:
        found = inventory.matching_vms(session, sel)
    if json_output:
        click.echo(json.dumps([vm_dict(v) for v in found], indent=2, ensure_ascii=False))
    else:
        for vm in found:
            click.echo(vm_block(vm))
    if not found:
        raise errors.NotFoundError(f"no VM matches {selector}")


def vm_dict(vm) -> dict:
    return {
        "moref": vm.moref,
        "name": vm.name,
        "uuid": vm.uuid,
        "ipaddr": vm.ip_address,
        "power_state": vm.power_state,
        "host": vm.host,
        "datacenter": vm.datacenter,
        "folder": vm.folder,
        "resource_pool": vm.resource_pool,
        "vmx_path": vm.vmx_path,
    }
