"""The lab's record of concurrent readers per datastore and per host, and the per-host
throttle (``host_throttle_bps``), over real sockets.

What a fleet of proxies promises (at most N exports reading a datastore or a host at once) is
checked against this record, so the record itself is tested here: readers counted per
session, per datastore and per host; peaks kept until reset.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.integration.test_lab_fileservice import folder, request
from vcblab.client import LabClient
from vcblab.process import start_lab


@pytest.fixture(scope="module")
def spread_lab(tmp_path_factory):
    """A lab with extra VMs spread over every host and datastore (vm000 on esx01, vm001 on
    esx02, vm002 on esx03, vm003 on esx01 ...)."""
    with start_lab(tmp_path_factory.mktemp("readers"), disk_size="4M", vms=6) as proc:
        yield proc


@pytest.fixture
def client(spread_lab):
    c = LabClient(spread_lab.info)
    c.reset_faults()
    c.reset_readers()
    yield c
    c.reset_faults()


def flat_extent(lab, vm: str) -> tuple[str, str, str]:
    """(dcPath, datastore, path inside it) of ``vm``'s first flat extent, from the lab's state."""
    state = LabClient(lab.info).state(vm)
    disk = next(iter(state["disks"].values()))
    flat = next(f for f in disk["files"] if f.endswith("-flat.vmdk"))
    return state["datacenter"], disk["datastore"], f"{disk['directory']}/{flat}"


def read_all(lab, cookie: str, where: tuple[str, str, str], out: list) -> None:
    dc, ds, rel = where
    status, _, body = request(lab.info, "http", "GET", folder(rel, ds, dc), {"Cookie": cookie})
    out.append((status, len(body)))


def test_extra_vms_spread_over_every_host_and_datastore(spread_lab):
    client = LabClient(spread_lab.info)
    hosts = {client.state(f"vm{i:03d}")["host"] for i in range(6)}
    assert len(hosts) == 3, hosts


def test_concurrent_readers_are_recorded_per_datastore_and_host(spread_lab, client):
    # vm000 (esx01) and vm003 (esx01) sit on different datastores of lab-dc; vm001 on esx02.
    where = {vm: flat_extent(spread_lab, vm) for vm in ("vm000", "vm001", "vm003")}
    client.set_faults(throttle_bps=16 << 20)  # slow enough that the reads overlap
    cookies = [client.login(), client.login(), client.login()]
    done: list = []
    threads = [
        threading.Thread(target=read_all, args=(spread_lab, cookie, where[vm], done))
        for cookie, vm in zip(cookies, ("vm000", "vm001", "vm003"), strict=True)
    ]
    # One session reading one file twice at once is one reader, not two.
    threads.append(
        threading.Thread(target=read_all, args=(spread_lab, cookies[1], where["vm001"], done))
    )
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [s for s, _ in done] == [200] * 4
    record = client.readers()
    hosts = {vm: client.state(vm)["host"] for vm in where}
    assert hosts["vm000"] == hosts["vm003"] != hosts["vm001"]
    assert record["hosts"][hosts["vm000"]]["max"] == 2
    assert record["hosts"][hosts["vm001"]]["max"] == 1, "one session is one reader"
    ds_of = {vm: f"{w[0]}/{w[1]}" for vm, w in where.items()}
    assert ds_of["vm000"] != ds_of["vm003"]
    for vm in where:
        assert record["datastores"][ds_of[vm]]["max"] >= 1
    assert record["lab"]["max"] >= 3, "three sessions read at once"
    assert record["lab"]["now"] == 0
    assert all(v["now"] == 0 for kind in ("datastores", "hosts") for v in record[kind].values())
    # A reset forgets the peaks.
    client.reset_readers()
    assert client.readers() == {"datastores": {}, "hosts": {}}


def test_host_throttle_caps_each_host_and_is_shared_by_its_transfers(spread_lab, client):
    rate = 4 << 20
    client.set_faults(host_throttle_bps=rate)
    cookie = client.login()
    size = 2 << 20
    dc, ds, rel = flat_extent(spread_lab, "vm000")
    headers = {"Cookie": cookie, "Range": f"bytes=0-{size - 1}"}
    start = time.monotonic()
    status, _, body = request(spread_lab.info, "http", "GET", folder(rel, ds, dc), headers)
    alone = time.monotonic() - start
    assert status == 206 and len(body) == size
    assert alone >= 0.4, f"2 MiB at 4 MiB/s per host took only {alone:.2f} s"
    # Two transfers through the same host share its link: together at least twice as long.
    same_host = [flat_extent(spread_lab, vm) for vm in ("vm000", "vm003")]
    out: list = []

    def ranged(where):
        d, s, r = where
        out.append(request(spread_lab.info, "http", "GET", folder(r, s, d), headers)[0])

    threads = [threading.Thread(target=ranged, args=(w,)) for w in same_host]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == [206, 206]
    both = time.monotonic() - start
    assert both >= 0.85, f"2 x 2 MiB through one host at 4 MiB/s took only {both:.2f} s"
