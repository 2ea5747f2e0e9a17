"""The fleet's leases against a real redis-server: the per-VM lock, the per-datastore and
per-host semaphores, and "is this attempt still alive" - each freeing itself when its
holder stops renewing it, by the broker's own clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from vcbproxy.fleet import broker
from vcbproxy.fleet.leases import AliveKey, FleetLiveness, Heartbeat, Limit, Semaphores, VmLease
from vcbproxy.jobs import ownership

TTL = 1.0  # the shortest lease: one second


@pytest.fixture
def r(redis_server):
    return broker.ping(redis_server.url)


def test_the_vm_lock_has_one_holder_until_it_lets_go_or_dies(r):
    first = VmLease(r, "k:vm", "proxy1/a", TTL)
    second = VmLease(r, "k:vm", "proxy2/b", TTL)
    assert first.acquire() and not second.acquire()
    assert second.holder() == "proxy1/a"
    first.release()
    assert second.acquire() and not first.acquire()
    # The holder dies (stops renewing): the lock runs out by itself.
    time.sleep(TTL + 0.3)
    assert first.acquire()


def test_a_heartbeat_keeps_a_lease_past_its_expiry(r):
    lease = VmLease(r, "k:vm2", "proxy1/a", TTL)
    assert lease.acquire()
    with Heartbeat(TTL / 3) as beat:
        beat.add(lease)
        time.sleep(TTL * 2.5)
        assert not VmLease(r, "k:vm2", "proxy2/b", TTL).acquire()


def test_semaphores_are_taken_all_or_none_within_their_limits(r):
    ds1 = Limit("k:ds1", 2, "datastore ds1")
    ds2 = Limit("k:ds2", 1, "datastore ds2")
    host = Limit("k:host", 3, "host esx01")
    a = Semaphores(r, [ds1, host], "a", TTL * 5)
    b = Semaphores(r, [ds1, ds2, host], "b", TTL * 5)
    c = Semaphores(r, [ds1, ds2], "c", TTL * 5)
    assert a.acquire() is None and b.acquire() is None
    full = c.acquire()
    assert full is not None and full.key in ("k:ds1", "k:ds2")
    # c took nothing of what it could not have all of.
    assert "c" not in Semaphores.holders(r, "k:ds1") + Semaphores.holders(r, "k:ds2")
    b.release()
    assert c.acquire() is None
    assert sorted(Semaphores.holders(r, "k:ds1")) == ["a", "c"]


def test_a_dead_holders_share_comes_back(r):
    lim = Limit("k:ds3", 1, "datastore ds3")
    dead = Semaphores(r, [lim], "dead", TTL)
    assert dead.acquire() is None
    assert Semaphores(r, [lim], "next", TTL).acquire() == lim
    time.sleep(TTL + 0.3)
    assert Semaphores(r, [lim], "next", TTL).acquire() is None


def test_the_fleet_says_whether_a_snapshots_owner_on_another_proxy_is_gone(r):
    """A snapshot whose owner ran on another proxy cannot be judged from /proc here: the fleet's
    key in Redis decides, alive while renewed, provably gone once it ran out."""
    attempt = "fleet-0123456789ab"
    AliveKey(r, attempt, TTL).acquire()
    elsewhere = ownership.Owner("proxy-elsewhere", 4242, 1.0, attempt)
    description = f"vcbproxy export; {elsewhere.tag()}"
    liveness = ownership.FirstAnswer(FleetLiveness(r), ownership.LocalProcesses())
    now = datetime.now(UTC)
    assert not ownership.may_remove(description, now, liveness=liveness).removable
    time.sleep(TTL + 0.3)
    verdict = ownership.may_remove(description, now, liveness=liveness)
    assert verdict.removable and "is gone" in verdict.why
    # Owners that are not fleet attempts are not the fleet's to judge.
    other = ownership.Owner("proxy-elsewhere", 4242, 1.0, "abcdef012345")
    assert FleetLiveness(r).alive(other) is None
    assert not ownership.may_remove(f"x; {other.tag()}", now, liveness=liveness).removable


def test_a_heartbeat_notices_when_another_proxy_took_the_vm(r):
    lease = VmLease(r, "k:vm3", "proxy1/a", TTL)
    assert lease.acquire()
    with Heartbeat(TTL / 4) as beat:
        beat.add(lease)
        time.sleep(TTL / 2)
        assert not beat.lost_vm
        # The broker was away past the expiry, and proxy2 took the VM meanwhile.
        r.set("k:vm3", "proxy2/b", px=int(TTL * 5000))
        time.sleep(TTL / 2)
        assert beat.lost_vm
    assert VmLease(r, "k:vm3", "proxy2/b", TTL).holder() == "proxy2/b"
