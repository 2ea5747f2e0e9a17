"""``fleet submit``: one task per VM a selector names, each carrying where its VM is (for
the limits) and where its export goes; the job's record in Redis says what became of each."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from kombu.exceptions import OperationalError

from vcbproxy import errors
from vcbproxy.fleet import broker
from vcbproxy.fleet.app import TASK, app
from vcbproxy.fleet.store import JobSpec, Store, VmState
from vcbproxy.jobs.inventory import matching_vms
from vcbproxy.models import VmRef
from vcbproxy.selectors import Selector
from vcbproxy.staging import names

PLACEHOLDERS = ("vm", "moref", "job")


@dataclass
class Submission:
    kind: str  # "mount" or "backup"
    target: str  # template: "{vm}-fullVM", "/backup/{vm}", "repos/{moref}"
    max_per_datastore: int | None
    max_per_host: int | None
    options: dict[str, Any]


def check_template(template: str) -> str:
    """A usage error unless ``template`` names only known placeholders and stays put."""
    try:
        template.format(**{p: "x" for p in PLACEHOLDERS})
    except (KeyError, IndexError, ValueError) as exc:
        raise errors.UsageError(
            f"directory template {template!r}: unknown or bad placeholder ({exc}); "
            f"use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
        ) from None
    if ".." in PurePosixPath(template).parts:
        raise errors.UsageError(f"directory template {template!r} must not contain '..'")
    return template


def expand(template: str, vm: VmRef, job: str, taken: set[str]) -> str:
    """The template for one VM; server-given names are made safe, and unique in the job."""
    path = template.format(
        vm=names.safe_component(vm.name),
        moref=names.safe_component(vm.moref),
        job=job,
    )
    unique = names.unique(path, taken)
    taken.add(unique)
    return unique


def submit(url: str, session, selector: Selector, sub: Submission) -> tuple[JobSpec, list[VmState]]:
    """Record the job and queue one task per VM; the job and its VMs' first states."""
    from vcbproxy.vsphere.placement import placements  # pyVmomi

    r = broker.ping(url)
    vms = matching_vms(session, selector)
    if not vms:
        raise errors.NotFoundError(f"no VM matches {selector}")
    where = placements(session, [vm.moref for vm in vms])
    server = session.server_id
    job = JobSpec(
        id=JobSpec.new_id(),
        kind=sub.kind,
        target=sub.target,
        server=server,
        selector=str(selector),
        max_per_datastore=sub.max_per_datastore,
        max_per_host=sub.max_per_host,
        options=sub.options,
        vms=[vm.moref for vm in vms],
    )
    taken: set[str] = set()
    states, requests = [], []
    for vm in vms:
        place = where.get(vm.moref)
        requests.append(
            {
                "job": job.id,
                "vm": vm.moref,
                "name": vm.name,
                "kind": sub.kind,
                "target": expand(sub.target, vm, job.id, taken),
                "server": server,
                "placement": {
                    "host": place.host if place else "",
                    "host_name": place.host_name if place else "",
                    "datastores": [list(d) for d in place.datastores] if place else [],
                },
                "max_per_datastore": sub.max_per_datastore,
                "max_per_host": sub.max_per_host,
                "options": sub.options,
            }
        )
        states.append(VmState(vm.moref, vm.name))
    with broker.translated(url, "recording the job"):
        Store(r).create(job, states)
    with broker.translated(url, "queueing the VMs"):
        try:
            for request in requests:
                app.send_task(
                    TASK,
                    args=[request],
                    task_id=f"{job.id}-{request['vm']}-{uuid.uuid4().hex[:6]}",
                    retry=True,
                    retry_policy={"max_retries": 3, "interval_start": 0.5, "interval_step": 1},
                )
        except OperationalError as exc:  # kombu's word for a broker it cannot reach
            raise ConnectionError(str(exc)) from exc
    return job, states
