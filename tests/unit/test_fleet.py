"""The fleet's pure logic: broker URLs, directory templates, which limits a VM needs.
(Everything that talks to Redis or the lab is tested for real in tests/e2e/test_fleet.py.)"""

from __future__ import annotations

import pytest

from vcbproxy import errors
from vcbproxy.fleet.broker import check_url, redacted
from vcbproxy.fleet.submit import check_template, expand
from vcbproxy.fleet.worker import limits_of
from vcbproxy.models import VmRef


@pytest.mark.parametrize(
    "url",
    ["redis://h:6379/0", "rediss://user:pw@h:6380/2", "redis://h", "unix:///run/redis.sock"],
)
def test_redis_urls_are_accepted(url):
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "no broker"),
        ("amqp://h/", "only Redis"),
        ("redis://h:notaport/0", "bad port"),
        ("redis:///0", "no host"),
        ("redis://h:6379/zero", "a number"),
    ],
)
def test_bad_broker_urls_are_usage_errors(url, why):
    with pytest.raises(errors.UsageError, match=why):
        check_url(url)


def test_the_broker_password_never_shows():
    assert redacted("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert "s3cret" not in redacted("redis://admin:s3cret@h/1")
    assert redacted("redis://h:6379/0") == "redis://h:6379/0"


def test_templates_name_safe_unique_directories():
    check_template("{vm}-fullVM")
    taken: set[str] = set()
    a = VmRef(moref="vm-1", name="dup", uuid="")
    b = VmRef(moref="vm-2", name="dup", uuid="")
    evil = VmRef(moref="vm-3", name="../../etc", uuid="")
    assert expand("{vm}-fullVM", a, "J", taken) == "dup-fullVM"
    assert expand("{vm}-fullVM", b, "J", taken) == "dup-fullVM-2"
    escaped = expand("{vm}-fullVM", evil, "J", taken)
    assert "/" not in escaped and escaped.split("-")[0] != ".."
    assert expand("repos/{job}/{moref}", a, "J", taken) == "repos/J/vm-1"


@pytest.mark.parametrize("template", ["{nope}", "{0}", "../{vm}", "a/../../{vm}", "{vm"])
def test_bad_templates_are_usage_errors(template):
    with pytest.raises(errors.UsageError):
        check_template(template)


def test_a_vm_needs_a_share_of_each_datastore_and_of_its_host():
    placement = {
        "host": "host-9",
        "host_name": "esx01",
        "datastores": [["datastore-1", "ds1"], ["datastore-2", "ds2"]],
    }
    request = {"server": "S", "max_per_datastore": 2, "max_per_host": 1}
    limits = limits_of(request, placement)
    assert sorted((lim.key, lim.limit) for lim in limits) == [
        ("vcbproxy:fleet:limit:datastore:S:datastore-1", 2),
        ("vcbproxy:fleet:limit:datastore:S:datastore-2", 2),
        ("vcbproxy:fleet:limit:host:S:host-9", 1),
    ]
    assert limits_of({"server": "S"}, placement) == [], "no limit asked, no share needed"
