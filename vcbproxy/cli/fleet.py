"""``vcbproxy fleet worker|submit|status|wait``: many proxies sharing one queue (Celery over
Redis), with per-datastore and per-host limits. The fleet package needs the ``fleet`` extra
(Celery, redis-py), so it is imported only when one of these commands runs."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import time
from pathlib import Path

import click

from vcbproxy import errors
from vcbproxy.cli.options import server_options, transport_options, vm_option
from vcbproxy.hooks import Hook, parse_hook
from vcbproxy.jobs.connection import connect
from vcbproxy.vmdk.writers import FORMATS

log = logging.getLogger(__name__)


def _fleet():
    """The fleet package, or exit 19 naming the extra to install."""
    try:
        import celery  # noqa: F401 - only to find out whether the extra is there
        import redis  # noqa: F401
    except ImportError as exc:
        raise errors.UnsupportedError(
            f"vcbproxy fleet needs Celery and redis-py ({exc.name} is missing): "
            f"pip install 'vcbproxy[fleet]'"
        ) from None
    from vcbproxy import fleet

    return fleet


def broker_option(func):
    return click.option(
        "--broker",
        envvar="VCBPROXY_BROKER",
        required=True,
        metavar="URL",
        help="Redis URL of the fleet's broker and result store, e.g. redis://HOST:6379/0. "
        "[env: VCBPROXY_BROKER]",
    )(func)


@click.group("fleet")
def fleet():
    """Many proxies on one queue: Celery workers over Redis, with per-datastore and
    per-host limits. See the README, "More than one proxy"."""


@fleet.command("worker")
@broker_option
@click.option(
    "--staging",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("staging"),
    show_default=True,
    help="This proxy's staging directory; relative export and repository templates go here.",
)
@click.option(
    "--slots",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="VMs this proxy runs at once (pool processes).",
)
@click.option(
    "--name", "proxy", metavar="PROXY", help="This proxy's name [default: the host name]."
)
@click.option(
    "-m",
    "--mode",
    default="nbdssl",
    show_default=True,
    metavar="MODE[:MODE...]",
    help="Transport this proxy reads disks with (as for mount).",
)
@click.option(
    "--pre-command", metavar="'CMD ARGS'", help="Run on this proxy before each VM's snapshot."
)
@click.option("--post-command", metavar="'CMD ARGS'", help="Run on this proxy after each export.")
@click.option("--hook-timeout", type=float, default=600, show_default=True)
@click.option(
    "--lease-seconds",
    type=click.FloatRange(3, 3600),
    default=30.0,
    show_default=True,
    help="Expiry of the VM lock and the limit shares this proxy holds, renewed every third "
    "of it: how long a dead proxy's VMs and shares stay taken.",
)
@click.option(
    "--visibility-timeout",
    type=click.FloatRange(10),
    default=6 * 3600.0,
    show_default=True,
    help="Seconds after which a VM whose proxy died unacknowledged is handed to another "
    "proxy. Must exceed the longest export.",
)
@click.option(
    "--restore-interval",
    type=click.FloatRange(1, 600),
    default=10.0,
    show_default=True,
    help="How often this worker looks for such VMs.",
)
@transport_options
@server_options
def worker(
    broker,
    staging,
    slots,
    proxy,
    mode,
    pre_command,
    post_command,
    hook_timeout,
    lease_seconds,
    visibility_timeout,
    restore_interval,
    transport,
    server,
):
    """Run this proxy's worker: take VMs from the queue and export or back them up here,
    with this proxy's staging directory, transport, credentials and hooks."""
    _fleet()
    from vcbproxy.fleet import app as fleet_app  # the fleet extra
    from vcbproxy.fleet import broker as fleet_broker  # the fleet extra
    from vcbproxy.fleet import worker as fleet_worker  # the fleet extra

    url = fleet_broker.check_url(broker)
    spec = server()
    if not spec.server or not spec.user:
        raise errors.UsageError("the worker needs --server and --user (or VCBPROXY_SERVER/_USER)")
    fleet_broker.ping(url)
    staging = staging.resolve()
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise errors.StagingError(
            f"cannot create staging directory {staging}: {exc.strerror}"
        ) from exc
    name = proxy or socket.gethostname()
    fleet_worker.CONTEXT = fleet_worker.WorkerContext(
        name=name,
        broker_url=url,
        staging=staging,
        server=spec,
        mode=mode,
        transport=transport(spec),
        pre_command=Hook(parse_hook(pre_command), hook_timeout) if pre_command else None,
        post_command=Hook(parse_hook(post_command), hook_timeout) if post_command else None,
        lease_seconds=lease_seconds,
    )
    app = fleet_app.configure(
        url, visibility_timeout=visibility_timeout, restore_interval=restore_interval
    )
    level = logging.getLevelName(max(logging.getLogger().getEffectiveLevel(), logging.DEBUG))
    click.echo(
        f"fleet worker {name}: staging {staging}, {slots} slot(s), broker {fleet_broker.redacted(url)}",
        err=True,
    )
    app.worker_main(
        [
            "worker",
            "--loglevel",
            "INFO" if level == "WARNING" else level,
            "--concurrency",
            str(slots),
            "--pool",
            "prefork",
            "--hostname",
            name if "@" in name else f"{name}@{socket.gethostname()}",
            "--queues",
            fleet_app.QUEUE,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


@fleet.command("submit")
@vm_option
@broker_option
@click.option(
    "--mount",
    "mount_template",
    metavar="DIR-TEMPLATE",
    help="Export each VM into this directory on the proxy that runs it (relative: under its "
    "--staging); {vm}, {moref} and {job} are replaced, e.g. '{vm}-fullVM'.",
)
@click.option(
    "--backup-repo",
    "repo_template",
    metavar="DIR-TEMPLATE",
    help="Back each VM up (CBT) into this repository instead, e.g. 'repos/{vm}'.",
)
@click.option(
    "--max-per-datastore",
    type=click.IntRange(1),
    help="VMs read at once from one datastore, fleet-wide.",
)
@click.option(
    "--max-per-host", type=click.IntRange(1), help="VMs read at once through one host, fleet-wide."
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="2gbsparse", show_default=True)
@click.option(
    "--checksum", type=click.Choice(["sha256", "none"]), default="sha256", show_default=True
)
@click.option("--quiesce/--no-quiesce", default=None, help="[default: when VMware Tools runs]")
@click.option(
    "--preexisting-mountpoint",
    type=click.Choice(["fail", "delete"]),
    default="fail",
    show_default=True,
)
@click.option(
    "--preexisting-snapshot",
    type=click.Choice(["fail", "delete"]),
    default="fail",
    show_default=True,
    help="A _VCB-BACKUP_ snapshot not left by this job's own dead attempts.",
)
@click.option("--fail-on-independent", is_flag=True)
@click.option("--read-all-blocks", is_flag=True)
@click.option("--no-fallback", is_flag=True, help="Backups: fail when a change ID is rejected.")
@click.option("--json", "json_output", is_flag=True, help="Print the job as JSON.")
@server_options
def submit(
    vm,
    broker,
    mount_template,
    repo_template,
    max_per_datastore,
    max_per_host,
    fmt,
    checksum,
    quiesce,
    preexisting_mountpoint,
    preexisting_snapshot,
    fail_on_independent,
    read_all_blocks,
    no_fallback,
    json_output,
    server,
):
    """Queue one task per VM the selector names; prints the job id."""
    _fleet()
    from vcbproxy.fleet import app as fleet_app  # the fleet extra
    from vcbproxy.fleet import broker as fleet_broker  # the fleet extra
    from vcbproxy.fleet.submit import Submission, check_template  # the fleet extra
    from vcbproxy.fleet.submit import submit as do_submit  # the fleet extra

    if (mount_template is None) == (repo_template is None):
        raise errors.UsageError(
            "give exactly one of --mount DIR-TEMPLATE or --backup-repo DIR-TEMPLATE"
        )
    url = fleet_broker.check_url(broker)
    fleet_broker.ping(url)  # before logging in to the server: a dead broker fails fast
    fleet_app.configure(url)
    sub = Submission(
        kind="mount" if mount_template is not None else "backup",
        target=check_template(mount_template or repo_template),
        max_per_datastore=max_per_datastore,
        max_per_host=max_per_host,
        options={
            "format": fmt,
            "checksum": checksum,
            "quiesce": quiesce,
            "preexisting_mountpoint": preexisting_mountpoint,
            "preexisting_snapshot": preexisting_snapshot,
            "fail_on_independent": fail_on_independent,
            "read_all_blocks": read_all_blocks,
            "fallback": not no_fallback,
        },
    )
    with connect(server()) as session:
        job, states = do_submit(url, session, vm.selector, sub)
    if json_output:
        click.echo(
            json.dumps({"job": job.id, "vms": [{"vm": s.vm, "name": s.name} for s in states]})
        )
    else:
        click.echo(job.id)
        click.echo(f"queued {len(states)} VM(s)", err=True)


def _states(url: str, job: str, patience: float):
    from vcbproxy.fleet import broker as fleet_broker  # the fleet extra
    from vcbproxy.fleet.store import Store  # the fleet extra

    def read():
        store = Store(fleet_broker.client(url))
        store.job(job)  # NotFoundError for an unknown job
        return store.states(job)

    return fleet_broker.patiently(url, "reading the job", read, patience=patience)


def _line(s) -> str:
    where = f" on {s.proxy}" if s.proxy else ""
    if s.state == "done":
        what = f"run {s.run} in {s.directory}" if s.run else s.directory
        extra = f" (exit {s.code}: {s.message})" if s.code else ""
        return f"{s.name} ({s.vm}): done{where}: {what}{extra}"
    if s.state == "failed":
        return f"{s.name} ({s.vm}): failed{where}, exit {s.code}: {s.message}"
    if s.state == "running":
        return f"{s.name} ({s.vm}): running{where}" + (f" ({s.message})" if s.message else "")
    return f"{s.name} ({s.vm}): queued" + (f" ({s.message})" if s.message else "")


def _show(states, json_output: bool) -> None:
    if json_output:
        click.echo(json.dumps([dataclasses.asdict(s) for s in states], sort_keys=True))
        return
    for s in states:
        click.echo(_line(s).replace("\n", "\\n"))


@fleet.command("status")
@click.argument("job")
@broker_option
@click.option("--json", "json_output", is_flag=True)
def status(job, broker, json_output):
    """Each VM of JOB: queued, running on which proxy, done (its export directory or run),
    or failed (its exit code and one-line message)."""
    _fleet()
    from vcbproxy.fleet import broker as fleet_broker  # the fleet extra

    _show(_states(fleet_broker.check_url(broker), job, patience=0), json_output)


@fleet.command("wait")
@click.argument("job")
@broker_option
@click.option(
    "--timeout", type=click.FloatRange(0), help="Give up after this many seconds (exit 1)."
)
@click.option(
    "--broker-patience",
    type=click.FloatRange(0),
    default=300.0,
    show_default=True,
    help="Seconds to wait for an unreachable broker (a restart) before exit 18.",
)
@click.option("--json", "json_output", is_flag=True)
def wait(job, broker, timeout, broker_patience, json_output):
    """Wait until every VM of JOB is done or failed; exit with the most severe VM exit code."""
    _fleet()
    from vcbproxy.fleet import broker as fleet_broker  # the fleet extra

    url = fleet_broker.check_url(broker)
    deadline = time.monotonic() + timeout if timeout is not None else None
    while True:
        states = _states(url, job, patience=broker_patience)
        if all(s.state in ("done", "failed") for s in states):
            break
        if deadline is not None and time.monotonic() > deadline:
            left = sum(1 for s in states if s.state not in ("done", "failed"))
            raise errors.VcbProxyError(f"job {job}: {left} VM(s) not finished after {timeout:g} s")
        time.sleep(1.0)
    _show(states, json_output)
    return errors.worst(s.code or 0 for s in states)
