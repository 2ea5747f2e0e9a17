"""What one proxy does with one VM of a fleet job: the body of the Celery task.

1. A VM already done or failed in the job's record is not touched again: the task was
   delivered twice (a proxy died after finishing, the broker restarted).
2. The per-VM lease (fleet-wide, expiring unless renewed) is taken; a VM held by a live
   holder is *busy*: the task goes back to the queue.
3. The shares of the VM's datastores and host are taken, all or none; a full one is busy too.
4. What a dead earlier attempt left is removed, by the ownership rule of
   :mod:`vcbproxy.jobs.ownership`: a ``_VCB-BACKUP_`` snapshot whose owner record names a
   fleet attempt whose key in Redis ran out (it renewed it while it lived), and an
   unfinished export directory whose writer is gone by the same rule. Any other stale snapshot follows the
   job's ``--preexisting-snapshot`` policy.
5. The export (or CBT backup) runs in this process with the proxy's own staging directory,
   transport and hooks; its outcome (directory or run, exit code, one-line message) goes
   into the record, which then never changes again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis

from vcbproxy import errors
from vcbproxy.fleet import broker
from vcbproxy.fleet.leases import (
    ATTEMPT_PREFIX,
    AliveKey,
    FleetLiveness,
    Heartbeat,
    Limit,
    Semaphores,
    VmLease,
    semaphore_key,
    vm_lock_key,
)
from vcbproxy.fleet.store import DONE, FAILED, QUEUED, RUNNING, Store, VmState
from vcbproxy.hooks import Hook
from vcbproxy.jobs import ownership
from vcbproxy.jobs.backup import BackupOptions, backup
from vcbproxy.jobs.backup_snapshot import VCB_SNAPSHOT
from vcbproxy.jobs.connection import connect
from vcbproxy.jobs.export import ExportOptions, export_vm
from vcbproxy.jobs.signals import signals_raise
from vcbproxy.models import ServerSpec
from vcbproxy.progress import Progress
from vcbproxy.staging.exportdir import INCOMPLETE_MARKER, ExportDir, read_identity
from vcbproxy.transport import ModeOptions

log = logging.getLogger(__name__)


class Busy(Exception):
    """The VM, one of its datastores or its host is at its limit: try again later."""


@dataclass
class WorkerContext:
    """One proxy's own configuration, set in the worker's main process before its pool
    forks: pool processes inherit it (the password never travels through the broker)."""

    name: str
    broker_url: str
    staging: Path
    server: ServerSpec
    mode: str = "nbdssl"
    transport: ModeOptions = field(default_factory=ModeOptions)
    pre_command: Hook | None = None
    post_command: Hook | None = None
    lease_seconds: float = 30.0  # expiry of the leases; renewed every third of it
    # Seconds a task that cannot start waits (jittered) before going back to the queue: long
    # enough not to spin on the broker, short enough that a freed share is taken soon.
    busy_wait: float = 0.3


CONTEXT: WorkerContext | None = None
_clients: dict[int, redis.Redis] = {}


def _redis(ctx: WorkerContext) -> redis.Redis:
    """One client per pool process (a client must not cross a fork)."""
    pid = os.getpid()
    if pid not in _clients:
        _clients.clear()
        _clients[pid] = broker.client(ctx.broker_url)
    return _clients[pid]


def limits_of(request: dict, placement: dict) -> list[Limit]:
    """The semaphores a VM needs: each of its datastores and its host, where a limit is set."""
    server = request["server"]
    out = []
    if request.get("max_per_datastore"):
        for moref, name in placement["datastores"]:
            out.append(
                Limit(
                    semaphore_key("datastore", server, moref),
                    int(request["max_per_datastore"]),
                    f"datastore {name}",
                )
            )
    if request.get("max_per_host") and placement.get("host"):
        out.append(
            Limit(
                semaphore_key("host", server, placement["host"]),
                int(request["max_per_host"]),
                f"host {placement['host_name'] or placement['host']}",
            )
        )
    return out


def run(request: dict, *, delivery: str) -> dict:
    """Run one VM's task; returns its final state (as a dict). Raises Busy to be retried."""
    ctx = CONTEXT
    if ctx is None:
        raise errors.UsageError("not running inside 'vcbproxy fleet worker'")
    r = _redis(ctx)
    store = Store(r)
    job, vm_id = request["job"], request["vm"]

    def patient(doing, fn):
        # The broker may be restarting: wait for it rather than lose the outcome.
        return broker.patiently(ctx.broker_url, doing, fn, patience=ctx.lease_seconds * 10)

    state = patient("reading the job", lambda: store.state(job, vm_id)) or VmState(
        vm_id, request["name"]
    )
    if state.final:
        log.info("%s: already %s in job %s; nothing to do", state.name, state.state, job)
        return _as_dict(state)
    # This attempt: the job id of its owner record (jobs/ownership.py), alive in Redis while
    # it runs, so that whoever finds its snapshot later can tell whether it is gone.
    attempt = f"{ATTEMPT_PREFIX}{uuid.uuid4().hex[:12]}"
    owner = f"{ctx.name}/{socket.gethostname()}/{os.getpid()}/{attempt}"
    lease = VmLease(r, vm_lock_key(request["server"], vm_id), owner, ctx.lease_seconds)
    if not patient("locking the VM", lease.acquire):
        # A VM another proxy runs keeps its "running" state; a queued one says why it waits.
        _busy(
            ctx,
            store,
            job,
            state,
            f"waiting: the VM is held by {lease.holder()}",
            record=state.state == QUEUED,
        )
    alive = AliveKey(r, attempt, ctx.lease_seconds)
    try:
        patient("registering the attempt", alive.acquire)
        with Heartbeat(ctx.lease_seconds / 3) as heartbeat:
            heartbeat.add(lease)
            heartbeat.add(alive)
            state = patient("reading the job", lambda: store.state(job, vm_id)) or state
            if state.final:  # finished by the holder we waited for
                return _as_dict(state)
            sems = Semaphores(r, limits_of(request, request["placement"]), owner, ctx.lease_seconds)
            full = sems.acquire()
            if full is not None:
                _busy(
                    ctx, store, job, state, f"waiting: {full.what} is at its limit ({full.limit})"
                )
            heartbeat.add(sems)
            try:
                state.state, state.proxy, state.message = RUNNING, ctx.name, ""
                state.attempts += 1
                state.attempt = attempt
                patient("recording the start", lambda: store.put(job, state))
                outcome = _run_job(ctx, r, request, state, sems, attempt)
            finally:
                heartbeat.remove(sems)
                _quietly(sems.release)
            if heartbeat.lost_vm:
                # Another proxy holds the VM now (the broker was away longer than the lease):
                # its attempt records the outcome; this one must not overwrite it.
                log.error("%s: lost the VM's lock to another proxy; not recording", state.name)
                return _as_dict(outcome)
            patient("recording the outcome", lambda: store.put(job, outcome))
            return _as_dict(outcome)
    finally:
        _quietly(alive.release)
        _quietly(lease.release)


def _busy(
    ctx: WorkerContext, store: Store, job: str, state: VmState, why: str, *, record: bool = True
):
    if record:
        state.state, state.message = QUEUED, why
        _quietly(lambda: store.put(job, state))
    # Wait a moment (jittered, so proxies do not retry in step) before going back to the queue.
    time.sleep(ctx.busy_wait * random.uniform(0.5, 1.5))
    raise Busy(f"{state.name}: {why}")


def _quietly(fn) -> None:
    try:
        fn()
    except (redis.RedisError, OSError) as exc:
        log.warning("broker unreachable (%s); the lease expires by itself", exc)


def _as_dict(state: VmState) -> dict:
    return dataclasses.asdict(state)


def _run_job(
    ctx: WorkerContext, r, request: dict, state: VmState, sems: Semaphores, attempt: str
) -> VmState:
    """Connect, check where the VM is now, clean what a dead earlier attempt left, run."""
    from vcbproxy.vsphere import inventory, placement  # pyVmomi: only once a job runs

    options = request["options"]
    target = Path(request["target"])
    target = target if target.is_absolute() else ctx.staging / target
    try:
        with signals_raise(), connect(ctx.server) as session:
            vm = inventory.get_vm(session, request["vm"])
            if vm is None:
                raise errors.NotFoundError(
                    f"VM {request['vm']} ({request['name']}) no longer exists"
                )
            now = placement.placements(session, [vm.moref]).get(vm.moref)
            if now is not None:
                _follow_placement(request, now, sems)
            _clean_dead_attempts(session, r, vm, request, target)
            progress = Progress.create("quiet")
            result: errors.Outcome
            if request["kind"] == "backup":
                result = backup(
                    session,
                    vm,
                    BackupOptions(
                        repo=target,
                        mode=ctx.mode,
                        transport_options=ctx.transport,
                        quiesce=options.get("quiesce"),
                        fallback=options.get("fallback", True),
                        preexisting_snapshot=options.get("preexisting_snapshot", "fail"),
                        job_id=attempt,
                    ),
                    progress,
                )
                state.run = result.run
                state.directory = str(result.path or target)
            else:
                result = export_vm(
                    session,
                    vm,
                    target,
                    ExportOptions(
                        target=target,
                        mode=ctx.mode,
                        fmt=options.get("format", "2gbsparse"),
                        quiesce=options.get("quiesce"),
                        preexisting_mountpoint=options.get("preexisting_mountpoint", "fail"),
                        preexisting_snapshot=options.get("preexisting_snapshot", "fail"),
                        fail_on_independent=options.get("fail_on_independent", False),
                        allocation_map=not options.get("read_all_blocks", False),
                        checksum=options.get("checksum", "sha256"),
                        pre_command=ctx.pre_command,
                        post_command=ctx.post_command,
                        transport_options=ctx.transport,
                        job_id=attempt,
                    ),
                    progress,
                )
                state.directory = str(target)
            progress.close()
        state.state, state.code = DONE, result.exit_code
        state.message = "; ".join(result.warnings)
    except errors.VcbProxyError as exc:
        state.state, state.code, state.message = FAILED, exc.exit_code, str(exc)
        log.warning("%s: %s", state.name, exc)
    return state


def _follow_placement(request: dict, now, sems: Semaphores) -> None:
    """The VM moved since the job was submitted: hold the shares of where it is now."""
    current = {"host": now.host, "host_name": now.host_name, "datastores": list(now.datastores)}
    was = request["placement"]
    if current["host"] == was.get("host") and [tuple(d) for d in was["datastores"]] == list(
        now.datastores
    ):
        return
    moved = limits_of(request, current)
    sems.release()
    sems.limits = sorted(moved, key=lambda lim: lim.key)
    full = sems.acquire()
    request["placement"] = current
    if full is not None:
        raise Busy(f"{request['name']} moved; {full.what} is at its limit ({full.limit})")


def _clean_dead_attempts(session, r, vm, request: dict, target: Path) -> None:
    """Remove what a dead earlier attempt left: a ``_VCB-BACKUP_`` snapshot whose owner is a
    fleet attempt that provably no longer runs (its key in Redis ran out: the ownership rule
    of jobs/ownership.py, with the fleet's answer in front of this host's processes), and an
    unfinished export directory whose writer is gone by the same rule. Snapshots of other
    owners are left to the export's own ``--preexisting-snapshot`` handling."""
    from vcbproxy.vsphere import snapshots  # pyVmomi: only once a job runs

    liveness = ownership.FirstAnswer(FleetLiveness(r), ownership.LocalProcesses())
    for snap in snapshots.find_snapshots_named(session, vm, VCB_SNAPSHOT):
        owner = ownership.Owner.parse(snap.description)
        if owner is None or not owner.job.startswith(ATTEMPT_PREFIX):
            continue
        verdict = ownership.may_remove_snapshot(snap, liveness=liveness)
        if verdict.removable:
            log.warning(
                "removing %s snapshot %s of %s: %s", VCB_SNAPSHOT, snap.moref, vm.name, verdict.why
            )
            snapshots.remove_snapshot(session, snap.moref)
    if request["kind"] == "mount" and (target / INCOMPLETE_MARKER).exists():
        # The marker names its writer (jobs/export): the same owner rule as the snapshot's,
        # so a reused pid is not taken for the writer. A marker that names nobody is debris.
        owner = ownership.Owner.from_dict((read_identity(target) or {}).get("owner"))
        if owner is None or liveness.alive(owner) is False:
            log.warning("removing unfinished export %s of a dead earlier attempt", target)
            ExportDir.remove(target)
