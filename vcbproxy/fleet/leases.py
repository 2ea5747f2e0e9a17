"""Leases in Redis that free themselves when their holder dies: the per-VM lock and the
per-datastore / per-host semaphores shared by every proxy of a fleet.

A holder is a string naming one attempt of one task on one proxy (proxy, host, pid, task,
attempt). Every lease has an expiry, counted by the Redis server's own clock (``TIME``
inside the scripts, so proxies whose clocks disagree still agree on it), and a live holder
renews it from a :class:`Heartbeat` thread several times per period. A holder that dies -
``kill -9``, a power cut, a proxy cut off from Redis - stops renewing, and its share comes
back once the lease runs out: no stale lock needs a human.

A semaphore is a sorted set of holders scored by their expiry; taking one first drops the
expired members, then adds the holder if fewer than the limit remain. All the semaphores a
VM needs (each datastore it has disks on, the host running it) are taken in one script, all
or none, so two proxies can never each hold half of what the other needs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from redis import exceptions as redis_errors

log = logging.getLogger(__name__)

PREFIX = "vcbproxy:fleet"

# KEYS[1] lock; ARGV owner, ttl ms. 1 if the owner holds it now (taken or renewed).
_LOCK_TAKE = """
local holder = redis.call('get', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# KEYS[1] lock; ARGV owner, ttl ms. 1 if renewed, 0 if the owner no longer holds it.
_LOCK_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_LOCK_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
# KEYS semaphores; ARGV[1] owner, ARGV[2] ttl ms, ARGV[3..] each key's limit.
# Returns 0 when all are taken, else the 1-based index of the first full one.
_SEM_TAKE_ALL = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('zremrangebyscore', key, '-inf', now)
  if not redis.call('zscore', key, ARGV[1]) and
     redis.call('zcard', key) >= tonumber(ARGV[2 + i]) then
    return i
  end
end
for i, key in ipairs(KEYS) do
  redis.call('zadd', key, now + ttl, ARGV[1])
  redis.call('pexpire', key, ttl * 2)
end
return 0
"""
# KEYS semaphores; ARGV owner, ttl ms. Number of keys the owner still held (renewed).
_SEM_RENEW = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local held = 0
for _, key in ipairs(KEYS) do
  local score = redis.call('zscore', key, ARGV[1])
  if score and tonumber(score) > now then
    redis.call('zadd', key, now + ttl, ARGV[1])
    redis.call('pexpire', key, ttl * 2)
    held = held + 1
  end
end
return held
"""
_SEM_RELEASE = """
for _, key in ipairs(KEYS) do
  redis.call('zrem', key, ARGV[1])
end
return 1
"""


ATTEMPT_PREFIX = "fleet-"


def alive_key(attempt: str) -> str:
    return f"{PREFIX}:alive:{attempt}"


def vm_lock_key(server: str, moref: str) -> str:
    return f"{PREFIX}:lock:vm:{server}:{moref}"


def semaphore_key(kind: str, server: str, moref: str) -> str:
    """``kind`` is "datastore" or "host"; keyed by what the server calls the object."""
    return f"{PREFIX}:limit:{kind}:{server}:{moref}"


@dataclass(frozen=True)
class Limit:
    key: str
    limit: int
    what: str  # for messages: "datastore datastore1", "host esx01"


class VmLease:
    """The per-VM lock: one holder at a time across the fleet, expiring unless renewed."""

    def __init__(self, r: redis.Redis, key: str, owner: str, ttl: float):
        self.r, self.key, self.owner = r, key, owner
        self.ttl_ms = max(1000, int(ttl * 1000))

    def acquire(self) -> bool:
        return bool(self.r.eval(_LOCK_TAKE, 1, self.key, self.owner, self.ttl_ms))

    def holder(self) -> str | None:
        value = self.r.get(self.key)
        return str(value) if value is not None else None

    def renew(self) -> bool:
        if self.r.eval(_LOCK_RENEW, 1, self.key, self.owner, self.ttl_ms):
            return True
        # Lost (a broker restarted without its data, or a stall longer than the expiry):
        # take it again if nobody else has.
        return self.acquire()

    def release(self) -> None:
        self.r.eval(_LOCK_RELEASE, 1, self.key, self.owner)


class AliveKey:
    """ "This attempt still runs": a key that exists while its holder renews it. What the
    fleet answers when a cleanup asks whether a snapshot's owner is gone (FleetLiveness)."""

    def __init__(self, r: redis.Redis, attempt: str, ttl: float):
        self.r, self.key = r, alive_key(attempt)
        self.ttl_ms = max(1000, int(ttl * 1000))

    def acquire(self) -> bool:
        return bool(self.r.set(self.key, "1", px=self.ttl_ms))

    def renew(self) -> bool:
        return bool(self.r.pexpire(self.key, self.ttl_ms)) or self.acquire()

    def release(self) -> None:
        self.r.delete(self.key)


class FleetLiveness:
    """A :class:`vcbproxy.jobs.ownership.Liveness` for owners that are fleet attempts (job
    ids ``fleet-...``): alive while their key exists, provably gone once it ran out; other
    owners are not the fleet's to judge (None)."""

    def __init__(self, r: redis.Redis):
        self.r = r

    def alive(self, owner) -> bool | None:
        if not owner.job.startswith(ATTEMPT_PREFIX):
            return None
        return bool(self.r.exists(alive_key(owner.job)))


class Semaphores:
    """Shares of several counting semaphores held together by one owner."""

    def __init__(self, r: redis.Redis, limits: Iterable[Limit], owner: str, ttl: float):
        self.r, self.owner = r, owner
        self.limits = sorted(limits, key=lambda lim: lim.key)
        self.ttl_ms = max(1000, int(ttl * 1000))

    def acquire(self) -> Limit | None:
        """Take every share at once; None when taken, else the limit that is full."""
        if not self.limits:
            return None
        keys = [lim.key for lim in self.limits]
        full = self.r.eval(
            _SEM_TAKE_ALL,
            len(keys),
            *keys,
            self.owner,
            self.ttl_ms,
            *[lim.limit for lim in self.limits],
        )
        return self.limits[int(full) - 1] if full else None

    def renew(self) -> bool:
        if not self.limits:
            return True
        keys = [lim.key for lim in self.limits]
        held = int(self.r.eval(_SEM_RENEW, len(keys), *keys, self.owner, self.ttl_ms))
        if held == len(keys):
            return True
        # Some share ran out (see VmLease.renew): take them again if there is room.
        return self.acquire() is None

    def release(self) -> None:
        if self.limits:
            keys = [lim.key for lim in self.limits]
            self.r.eval(_SEM_RELEASE, len(keys), *keys, self.owner)

    @staticmethod
    def holders(r: redis.Redis, key: str) -> list[str]:
        return [str(m) for m in r.zrange(key, 0, -1)]


class Heartbeat:
    """Renews leases every ``interval`` seconds in a daemon thread while a job runs.

    A renewal that fails because Redis is away (a broker restart) is retried at the next
    beat: the leases outlive a short outage, since their expiry is several beats long. The
    VM lock found in another holder's hands (an outage longer than the expiry, and another
    proxy took the VM meanwhile) sets ``lost_vm``: the job's outcome is then the other's to
    record.
    """

    def __init__(self, interval: float):
        self.interval = interval
        self.lost_vm = False
        self._leases: list[VmLease | Semaphores | AliveKey] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-heartbeat", daemon=True)

    def add(self, lease: VmLease | Semaphores | AliveKey) -> None:
        self._leases.append(lease)

    def remove(self, lease: VmLease | Semaphores) -> None:
        if lease in self._leases:
            self._leases.remove(lease)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(self.interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for lease in list(self._leases):
                try:
                    if not lease.renew():
                        log.warning("a fleet lease was lost and could not be taken again")
                        if isinstance(lease, VmLease):
                            self.lost_vm = True
                except (redis_errors.RedisError, OSError) as exc:
                    log.warning("cannot renew fleet leases (broker away?): %s", exc)
