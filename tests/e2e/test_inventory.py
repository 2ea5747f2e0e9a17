"""vms and snapshot commands, written once and run against every vSphere endpoint the suite
knows (the lab, govmomi's vcsim): only what vSphere itself promises is asserted here."""

from __future__ import annotations

import json

import pytest

from tests.e2e import cli
from tests.e2e.cli import run


@pytest.fixture(name="endpoint_env")
def endpoint_env_fixture(vsphere_endpoint):
    return cli.endpoint_env(vsphere_endpoint)


def all_vms(env) -> list[dict]:
    res = run(env, "vms", "-s", "any", "--json")
    assert res.code == 0, res
    return json.loads(res.out)


def test_vms_any_prints_vcb_blocks_for_every_vm(endpoint_env):
    vms = all_vms(endpoint_env)
    assert len(vms) >= 2
    res = run(endpoint_env, "vms", "-s", "any")
    assert res.code == 0, res
    blocks = [b for b in res.out.split("Found VM:\n") if b.strip()]
    assert len(blocks) == len(vms)
    for block in blocks:
        keys = [line.split(":", 1)[0] for line in block.strip().splitlines()]
        assert keys == ["moref", "name", "uuid", "ipaddr"], block


@pytest.mark.parametrize("kind", ["name", "uuid", "moref"])
def test_each_selector_finds_exactly_that_vm(endpoint_env, kind):
    names = [v["name"] for v in all_vms(endpoint_env)]
    vm = next(v for v in all_vms(endpoint_env) if names.count(v["name"]) == 1)
    value = {"name": vm["name"], "uuid": vm["uuid"], "moref": vm["moref"]}[kind]
    res = run(endpoint_env, "vms", "-s", f"{kind}:{value}", "--json")
    assert res.code == 0, res
    assert [v["moref"] for v in json.loads(res.out)] == [vm["moref"]]


def test_ipaddr_and_powerstate_selectors(endpoint_env):
    vms = all_vms(endpoint_env)
    on = run(endpoint_env, "vms", "-s", "powerstate:on", "--json")
    assert on.code == 0, on
    assert {v["moref"] for v in json.loads(on.out)} == {
        v["moref"] for v in vms if v["power_state"] == "poweredOn"
    }
    with_ip = [v for v in vms if v["ipaddr"]]
    assert with_ip, "no VM reports an IP address (VMware Tools)"
    res = run(endpoint_env, "vms", "-s", f"ipaddr:{with_ip[0]['ipaddr']}", "--json")
    assert res.code == 0, res
    assert with_ip[0]["moref"] in [v["moref"] for v in json.loads(res.out)]


def test_unknown_vm_and_bad_selector(endpoint_env):
    res = run(endpoint_env, "vms", "-s", "name:surely-no-such-vm")
    assert res.code == 11, res
    assert "surely-no-such-vm" in res.err and "Traceback" not in res.err
    res = run(endpoint_env, "vms", "-s", "color:blue")
    assert res.code == 2, res
    assert "name:" in res.err


def test_snapshot_create_list_delete_and_sweep(endpoint_env):
    vm = all_vms(endpoint_env)[0]
    sel = f"moref:{vm['moref']}"
    res = run(endpoint_env, "snapshot", "create", "-a", sel)
    assert res.code == 0, res
    ssid = res.out.strip().removeprefix("SsId:")
    assert res.out.startswith("SsId:") and ssid
    listed = json.loads(run(endpoint_env, "snapshot", "list", "-a", sel, "--json").out)
    assert ssid in [s["ssid"] for s in listed]
    res = run(endpoint_env, "snapshot", "delete", "-a", sel, ssid)
    assert res.code == 0, res
    listed = json.loads(run(endpoint_env, "snapshot", "list", "-a", sel, "--json").out)
    assert ssid not in [s["ssid"] for s in listed]
    # sweep: a stale _VCB-BACKUP_ is found and removed; younger ones are left unless --older-than 0
    ssid = run(endpoint_env, "snapshot", "create", "-a", sel).out.strip().removeprefix("SsId:")
    res = run(endpoint_env, "snapshot", "sweep", "--older-than", "1h")
    assert res.code == 0, res
    assert ssid in [
        s["ssid"]
        for s in json.loads(run(endpoint_env, "snapshot", "list", "-a", sel, "--json").out)
    ]
    res = run(endpoint_env, "snapshot", "sweep", "--older-than", "0")
    assert res.code == 0, res
    assert f"SsId:{ssid}" in res.out and "removed" in res.out
    assert ssid not in [
        s["ssid"]
        for s in json.loads(run(endpoint_env, "snapshot", "list", "-a", sel, "--json").out)
    ]
