"""`vcbproxy lab serve|churn`: run the embedded simulated vCenter, write into its guests."""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
from pathlib import Path

import click

from vcbproxy import errors
from vcbproxy.cli.paths import WorkingDirPath

DEFAULT_ROOT = Path.home() / ".cache" / "vcbproxy-lab"
INFO_FILE = "lab-info.json"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'64M', '1g', '1048576' -> bytes (binary units, as disk sizes are)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise click.BadParameter(f"{text!r} is not a size like 64M or 2G")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _faults(values: tuple[str, ...]) -> dict:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: use NAME=VALUE", param_hint="--fault")
        out[name.strip()] = value.strip()
    return out


@click.group()
def lab() -> None:
    """The embedded simulated vCenter (for the demo and the tests)."""


@lab.command()
@click.option(
    "--root",
    type=WorkingDirPath(file_okay=False, path_type=Path),
    default=DEFAULT_ROOT,
    show_default=True,
    help="Directory holding datastores, certificate, password.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=0, show_default=True, help="HTTPS port (0: any).")
@click.option(
    "--http-port", type=int, default=0, show_default=True, help="Plain-HTTP data port (0: any)."
)
@click.option("--vms", type=int, default=0, show_default=True, help="Extra plain VMs vm000...")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of all content.")
@click.option("--disk-size", default="32M", show_default=True, help="Capacity of each disk.")
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="NAME=VALUE",
    help="Fault switch to set at start (repeatable).",
)
@click.option(
    "--big-vm",
    "big_vms",
    multiple=True,
    metavar="NAME=SIZE",
    help="An extra running VM with one disk of SIZE, ~40% allocated (repeatable); for "
    "benchmarks such as 'vcbproxy compare' on an 8G disk.",
)
def serve(root, host, port, http_port, vms, seed, disk_size, faults, big_vms) -> None:
    """Serve a lab until SIGINT/SIGTERM; prints one JSON line describing it."""
    # The lab, only for 'vcbproxy lab': the product never imports it otherwise.
    from vcblab import app
    from vcblab.faults import FaultError

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        _lab, server, info = app.start(
            root,
            host=host,
            port=port,
            http_port=http_port,
            vms=vms,
            seed=seed,
            disk_size=parse_size(disk_size),
            faults=_faults(faults),
            big_vms=_big_vms(big_vms),
        )
    except FaultError as exc:
        raise errors.UsageError(str(exc)) from exc
    except OSError as exc:
        raise errors.VcbProxyError(f"cannot start the lab: {exc}") from exc
    (Path(info["root"]) / INFO_FILE).write_text(json.dumps(info) + "\n")
    click.echo(json.dumps(info))
    sys.stdout.flush()
    while not stop.wait(0.1):
        pass
    server.stop()


@lab.command()
@click.option(
    "--root",
    type=WorkingDirPath(file_okay=False, path_type=Path),
    default=DEFAULT_ROOT,
    show_default=True,
    help="Root of the running lab (its lab-info.json is read).",
)
@click.option("--vm", required=True, help="VM name or moref.")
@click.option("--percent", type=float, required=True, help="Share of each disk to rewrite.")
@click.option("--seed", type=int, default=None, help="Seed of the written blocks.")
def churn(root, vm, percent, seed) -> None:
    """Write blocks into a running VM's disks, as its guest would (CBT records them)."""
    from vcblab.client import LabClient  # the lab, only for 'vcbproxy lab'

    info_file = Path(root) / INFO_FILE
    try:
        info = json.loads(info_file.read_text())
    except (OSError, ValueError) as exc:
        raise errors.NotFoundError(f"no running lab under {root} ({info_file}: {exc})") from exc
    result = LabClient(info).churn(vm, percent, seed)
    click.echo(json.dumps(result))


def _big_vms(items) -> dict[str, int]:
    out = {}
    for item in items:
        name, sep, size = item.partition("=")
        if not sep or not name or not size:
            raise errors.UsageError(f"bad --big-vm {item!r}: use NAME=SIZE, e.g. big01=8G")
        out[name] = parse_size(size)
    return out
