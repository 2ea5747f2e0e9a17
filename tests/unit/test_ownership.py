"""The ownership rule (vcbproxy.jobs.ownership): who may remove a backup snapshot. Real
processes for liveness (a child that runs, one that was killed); pure logic otherwise."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from vcbproxy.jobs.ownership import (
    STALE_AFTER,
    FirstAnswer,
    LocalProcesses,
    Owner,
    may_remove,
    process_start,
    this_host,
)

NOW = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)


class Fixed:
    def __init__(self, answer):
        self.answer = answer

    def alive(self, owner):
        return self.answer


@pytest.fixture
def child():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def owner_of(pid: int, job: str = "j1") -> Owner:
    started = process_start(pid)
    assert started is not None and started > 0
    return Owner(this_host(), pid, round(started, 2), job)


def test_the_tag_round_trips_inside_a_description():
    owner = Owner("proxy 1/ä", 4242, 1733290000.25, "3f2a9c1d4e5b")
    description = f"vcbproxy 1.0 export; {owner.tag()}"
    assert Owner.parse(description) == owner
    assert Owner.from_dict(owner.as_dict()) == owner
    assert Owner.parse("vcbproxy 0.9 export") is None
    assert Owner.from_dict({"pid": "x"}) is None


def test_this_process_is_alive_and_its_jobs_are_distinct():
    me = Owner.this_process()
    assert LocalProcesses().alive(me) is True
    assert me.job != Owner.this_process().job


def test_a_killed_process_is_provably_gone(child):
    owner = owner_of(child.pid)
    assert LocalProcesses().alive(owner) is True
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert LocalProcesses().alive(owner) is False


def test_a_reused_pid_is_not_the_owner(child):
    started = owner_of(child.pid).started
    assert LocalProcesses().alive(Owner(this_host(), child.pid, started - 3600, "j")) is False


def test_an_unreaped_zombie_is_gone():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = Owner(this_host(), proc.pid, 0.0, "j")
    import time

    deadline = time.monotonic() + 30
    while process_start(proc.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.02)  # exited, not yet waited for: a zombie
    assert process_start(proc.pid) is None
    assert LocalProcesses().alive(owner) is False
    proc.wait()


def test_another_hosts_owner_cannot_be_told_here():
    assert LocalProcesses().alive(Owner("elsewhere.example", 1, 0.0, "j")) is None
    chained = FirstAnswer(Fixed(None), Fixed(True), Fixed(False))
    assert chained.alive(Owner("elsewhere.example", 1, 0.0, "j")) is True


def verdict(description, age, answer, stale_after=STALE_AFTER):
    created = None if age is None else NOW - age
    return may_remove(
        description, created, liveness=Fixed(answer), stale_after=stale_after, now=NOW
    )


TAGGED = "vcbproxy 1.0 export; " + Owner("p1", 7, 1.0, "abc").tag()


def test_a_gone_owner_is_removable_at_any_age():
    v = verdict(TAGGED, timedelta(seconds=1), False)
    assert v.removable and v.owner and v.owner.job == "abc"
    assert "is gone" in v.why


def test_a_running_owner_is_never_removable():
    v = verdict(TAGGED, timedelta(days=30), True, stale_after=timedelta(0))
    assert not v.removable
    assert "job abc (pid 7 on p1), which is still running" in v.why


@pytest.mark.parametrize("description", [TAGGED, "made by hand"])
def test_an_owner_that_cannot_be_checked_waits_for_the_stale_age(description):
    young = verdict(description, STALE_AFTER - timedelta(minutes=1), None)
    assert not young.removable and "less than 24h" in young.why
    assert verdict(description, STALE_AFTER, None).removable
    assert not verdict(description, None, None).removable  # unknown age: never
    assert verdict(description, timedelta(0), None, stale_after=timedelta(0)).removable
