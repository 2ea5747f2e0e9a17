"""A fleet job and the state of each of its VMs, kept in Redis beside the queue.

    vcbproxy:fleet:job:<id>        JSON: what was submitted (kind, target, limits, VMs)
    vcbproxy:fleet:job:<id>:vms    hash: VM moref -> JSON state of that VM

A VM's state goes queued -> running -> done | failed. Only the holder of the VM's lock writes
it, and once it is done or failed it never changes again (the script refuses), so a task
delivered twice - a proxy died, the broker restarted - finds the VM done and exports nothing.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from vcbproxy import errors
from vcbproxy.fleet.leases import PREFIX, alive_key

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
FINAL = (DONE, FAILED)
KEEP_SECONDS = 30 * 24 * 3600  # a job's record lives a month after its last change

# KEYS[1] vms hash; ARGV moref, new JSON. Refuses to change a final state: 0.
_SET_STATE = """
local old = redis.call('hget', KEYS[1], ARGV[1])
if old then
  local state = cjson.decode(old)['state']
  if state == 'done' or state == 'failed' then return 0 end
end
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('expire', KEYS[1], ARGV[3])
return 1
"""


@dataclass
class VmState:
    vm: str  # moref
    name: str
    state: str = QUEUED
    proxy: str = ""  # the proxy (worker name) running or that ran it
    directory: str = ""  # export directory on that proxy (mount)
    run: int = 0  # run number in the repository (backup)
    code: int | None = None  # exit code once done or failed
    message: str = ""  # the one-line error, a warning, or why it waits
    attempts: int = 0
    attempt: str = ""  # the running attempt's id (alive in Redis while it renews its key)
    updated: float = field(default_factory=time.time)

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @classmethod
    def from_json(cls, text: str) -> VmState:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class JobSpec:
    """What ``fleet submit`` asked for; the tasks carry the parts a worker needs."""

    id: str
    kind: str  # "mount" or "backup"
    target: str  # directory template (mount) or repository template (backup)
    server: str  # the vCenter's identity (its instance UUID)
    selector: str
    max_per_datastore: int | None
    max_per_host: int | None
    options: dict[str, Any]
    vms: list[str]
    created: float = field(default_factory=time.time)

    @staticmethod
    def new_id() -> str:
        return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


def _job_key(job: str) -> str:
    return f"{PREFIX}:job:{job}"


class Store:
    def __init__(self, r: redis.Redis):
        self.r = r

    def create(self, spec: JobSpec, states: list[VmState]) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.set(_job_key(spec.id), json.dumps(asdict(spec), sort_keys=True), ex=KEEP_SECONDS)
        pipe.hset(_job_key(spec.id) + ":vms", mapping={s.vm: s.to_json() for s in states})
        pipe.expire(_job_key(spec.id) + ":vms", KEEP_SECONDS)
        pipe.execute()

    def job(self, job: str) -> JobSpec:
        raw = self.r.get(_job_key(job))
        if raw is None:
            raise errors.NotFoundError(f"no fleet job {job!r} on this broker")
        return JobSpec(**json.loads(raw))

    def states(self, job: str) -> list[VmState]:
        """Every VM's state; a running one whose proxy stopped renewing its attempt's key
        (the proxy died) says so, until the VM is handed to another proxy."""
        raw = self.r.hgetall(_job_key(job) + ":vms")
        states = sorted(
            (VmState.from_json(str(v)) for v in raw.values()), key=lambda s: (s.name, s.vm)
        )
        for s in states:
            if s.state == RUNNING and s.attempt and not self.r.exists(alive_key(s.attempt)):
                s.message = (
                    f"{s.proxy} stopped renewing its lease (dead?); the VM goes to another "
                    f"proxy after the visibility timeout"
                )
        return states

    def state(self, job: str, vm: str) -> VmState | None:
        raw = self.r.hget(_job_key(job) + ":vms", vm)
        return VmState.from_json(str(raw)) if raw else None

    def put(self, job: str, state: VmState) -> bool:
        """Write ``state`` unless the VM's state is already final; False if refused."""
        state.updated = time.time()
        return bool(
            self.r.eval(
                _SET_STATE, 1, _job_key(job) + ":vms", state.vm, state.to_json(), KEEP_SECONDS
            )
        )
