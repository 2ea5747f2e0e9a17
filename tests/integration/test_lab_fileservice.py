"""The lab's datastore file service over real sockets, on both ports (plain HTTP and TLS).

Bodies are checked against the files in the lab's datastore directories, read directly.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import ssl
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from vcblab.client import LabClient

PORTS = ["http", "https"]


def request(
    info: dict,
    port: str,
    method: str,
    path: str,
    headers: dict | None = None,
    body: bytes | None = None,
) -> tuple[int, dict, bytes]:
    if port == "http":
        conn = http.client.HTTPConnection("127.0.0.1", info["http_port"], timeout=30)
    else:
        ctx = ssl.create_default_context(cafile=info["cert_file"])
        conn = http.client.HTTPSConnection("127.0.0.1", info["https_port"], context=ctx, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def folder(rel: str, ds: str = "datastore1", dc: str = "lab-dc") -> str:
    return f"/folder/{quote(rel)}?dcPath={quote(dc)}&dsName={quote(ds)}"


@pytest.fixture
def client(lab):
    c = LabClient(lab.info)
    yield c
    c.reset_faults()  # leave the shared lab as found


@pytest.fixture
def cookie(client):
    return client.login()


@pytest.fixture(scope="module")
def disk_file(lab) -> tuple[str, Path]:
    """(path inside datastore1, host path) of a VM's flat extent holding data."""
    ds_dir = Path(lab.info["datastores"]["datastore1"])
    files = sorted(ds_dir.rglob("*-flat.vmdk"), key=lambda f: f.stat().st_size)
    assert files, "the lab has no flat extents on datastore1"
    f = files[0]
    return f.relative_to(ds_dir).as_posix(), f


@pytest.mark.parametrize("port", PORTS)
def test_get_whole_file(lab, cookie, disk_file, port):
    rel, host_path = disk_file
    status, headers, body = request(lab.info, port, "GET", folder(rel), {"Cookie": cookie})
    assert status == 200
    assert int(headers["content-length"]) == host_path.stat().st_size == len(body)
    assert hashlib.sha256(body).digest() == hashlib.sha256(host_path.read_bytes()).digest()
    assert any(body), "a lab disk extent should hold data"


@pytest.mark.parametrize("port", PORTS)
def test_range_requests(lab, cookie, disk_file, port):
    rel, host_path = disk_file
    data = host_path.read_bytes()
    size = len(data)
    status, headers, body = request(
        lab.info, port, "GET", folder(rel), {"Cookie": cookie, "Range": "bytes=65530-200000"}
    )
    assert status == 206
    assert headers["content-range"] == f"bytes 65530-200000/{size}"
    assert body == data[65530:200001]
    # Open-ended and suffix ranges, and a range running past the end.
    assert (
        request(
            lab.info, port, "GET", folder(rel), {"Cookie": cookie, "Range": f"bytes={size - 10}-"}
        )[2]
        == data[-10:]
    )
    assert (
        request(lab.info, port, "GET", folder(rel), {"Cookie": cookie, "Range": "bytes=-7"})[2]
        == data[-7:]
    )
    status, headers, body = request(
        lab.info,
        port,
        "GET",
        folder(rel),
        {"Cookie": cookie, "Range": f"bytes={size - 5}-{size + 99}"},
    )
    assert (status, body) == (206, data[-5:])
    status, headers, _ = request(
        lab.info, port, "GET", folder(rel), {"Cookie": cookie, "Range": f"bytes={size}-"}
    )
    assert status == 416 and headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize("port", PORTS)
def test_head(lab, cookie, disk_file, port):
    rel, host_path = disk_file
    status, headers, body = request(lab.info, port, "HEAD", folder(rel), {"Cookie": cookie})
    assert status == 200 and body == b""
    assert int(headers["content-length"]) == host_path.stat().st_size
    assert headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize("port", PORTS)
def test_authentication(lab, client, disk_file, port):
    rel, _ = disk_file
    assert request(lab.info, port, "GET", folder(rel))[0] == 401
    assert (
        request(lab.info, port, "GET", folder(rel), {"Cookie": 'vmware_soap_session="nope"'})[0]
        == 401
    )
    # The control API's bearer token is not a file-service credential.
    assert (
        request(
            lab.info,
            port,
            "GET",
            folder(rel),
            {"Authorization": "Bearer " + Path(lab.info["password_file"]).read_text().strip()},
        )[0]
        == 401
    )


def test_expired_session_is_refused(fresh_lab):
    # A lab of its own: expiring sessions would log other tests out.
    client = LabClient(fresh_lab.info)
    cookie = client.login()
    ds_dir = Path(fresh_lab.info["datastores"]["datastore1"])
    rel = next(ds_dir.rglob("*-flat.vmdk")).relative_to(ds_dir).as_posix()
    assert request(fresh_lab.info, "http", "HEAD", folder(rel), {"Cookie": cookie})[0] == 200
    client.set_faults(expire_sessions=True)
    assert request(fresh_lab.info, "http", "HEAD", folder(rel), {"Cookie": cookie})[0] == 401
    # An idle session expires by itself after session_timeout.
    cookie = client.login()
    client.set_faults(session_timeout=0.3)
    time.sleep(0.6)
    assert request(fresh_lab.info, "http", "HEAD", folder(rel), {"Cookie": cookie})[0] == 401


def test_folder_unauthorized_answers_401_that_many_times_whatever_the_cookie(
    lab, client, cookie, disk_file
):
    rel, _ = disk_file
    before = client.logins()
    client.set_faults(folder_unauthorized=2)
    statuses = [
        request(lab.info, "http", "HEAD", folder(rel), {"Cookie": cookie})[0] for _ in "abc"
    ]
    assert statuses == [401, 401, 200]
    assert client.faults()["folder_unauthorized"] == 0
    assert client.logins() == before  # a switch of the file service, not of the sessions


def test_reject_logins_refuses_the_right_password(fresh_lab):
    from vcbproxy import errors

    client = LabClient(fresh_lab.info)
    client.login()
    assert client.logins() == 1
    client.set_faults(reject_logins=True)
    with pytest.raises(errors.AuthError, match="InvalidLogin|incorrect"):
        client.login()
    assert client.logins() == 1


@pytest.mark.parametrize("port", PORTS)
def test_not_found_and_forbidden(lab, cookie, disk_file, port):
    rel, _ = disk_file
    h = {"Cookie": cookie}
    assert request(lab.info, port, "GET", folder(rel, ds="nods"), h)[0] == 404
    assert request(lab.info, port, "GET", folder(rel, dc="otherdc"), h)[0] == 404
    assert request(lab.info, port, "GET", f"/folder/{quote(rel)}", h)[0] == 404
    assert request(lab.info, port, "GET", folder(rel + ".missing"), h)[0] == 404
    assert request(lab.info, port, "GET", folder(rel.rsplit("/", 1)[0]), h)[0] == 404
    assert request(lab.info, port, "GET", folder("../../etc/passwd"), h)[0] == 403
    escaped = "/folder/%2e%2e/%2e%2e/etc/passwd?dcPath=lab-dc&dsName=datastore1"
    assert request(lab.info, port, "GET", escaped, h)[0] == 403
    assert request(lab.info, port, "PUT", folder("../outside.bin"), h, b"x")[0] == 403


def test_symlink_out_of_the_datastore_is_forbidden(lab, cookie, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret")
    link = Path(lab.info["datastores"]["datastore1"]) / "escape-link"
    link.symlink_to(secret)
    try:
        assert request(lab.info, "http", "GET", folder("escape-link"), {"Cookie": cookie})[0] == 403
    finally:
        link.unlink()


@pytest.mark.parametrize("port", PORTS)
def test_put_creates_and_overwrites(lab, cookie, port):
    ds_dir = Path(lab.info["datastores"]["datastore2"])
    rel = f"uploads-{port}/sub dir/disk ü.bin"
    payload = bytes(range(256)) * 9000  # > 2 MiB: several reads on the server
    h = {"Cookie": cookie}
    status, _, _ = request(lab.info, port, "PUT", folder(rel, ds="datastore2"), h, payload)
    assert status == 201
    assert (ds_dir / rel).read_bytes() == payload
    assert not list((ds_dir / rel).parent.glob("*.labupload"))
    status, _, body = request(lab.info, port, "GET", folder(rel, ds="datastore2"), h)
    assert (status, body) == (200, payload)
    status, _, _ = request(lab.info, port, "PUT", folder(rel, ds="datastore2"), h, b"second")
    assert status == 200
    assert (ds_dir / rel).read_bytes() == b"second"
    assert request(lab.info, port, "PUT", folder(rel, ds="datastore2"), {}, b"x")[0] == 401


def test_put_with_a_short_body_leaves_nothing(lab, cookie):
    ds_dir = Path(lab.info["datastores"]["datastore2"])
    with socket.create_connection(("127.0.0.1", lab.info["http_port"])) as s:
        s.sendall(
            (
                f"PUT {folder('short/upload.bin', ds='datastore2')} HTTP/1.1\r\n"
                f"Host: x\r\nCookie: {cookie}\r\nContent-Length: 1000\r\n\r\n"
            ).encode()
            + b"only a part"
        )
        s.shutdown(socket.SHUT_WR)
        answer = s.recv(1000)  # the server answers after cleaning up
    assert answer.startswith(b"HTTP/1.1 400")
    assert not (ds_dir / "short" / "upload.bin").exists()
    assert not list((ds_dir / "short").glob("*.labupload"))


@pytest.mark.parametrize("port", PORTS)
def test_drop_fault_cuts_after_n_bytes_then_recovers(lab, client, cookie, disk_file, port):
    rel, host_path = disk_file
    client.set_faults(drop_after_bytes=100_000, drop_count=1)
    with pytest.raises(http.client.IncompleteRead) as broken:
        request(lab.info, port, "GET", folder(rel), {"Cookie": cookie})
    assert len(broken.value.partial) == 100_000
    assert broken.value.partial == host_path.read_bytes()[:100_000]
    # drop_count=1: the next transfer goes through.
    status, _, body = request(lab.info, port, "GET", folder(rel), {"Cookie": cookie})
    assert status == 200 and len(body) == host_path.stat().st_size


def test_throttle_caps_the_rate(lab, client, cookie, disk_file):
    rel, _ = disk_file
    client.set_faults(throttle_bps=4 << 20)
    start = time.monotonic()
    status, _, body = request(
        lab.info,
        "http",
        "GET",
        folder(rel),
        {"Cookie": cookie, "Range": f"bytes=0-{(2 << 20) - 1}"},
    )
    elapsed = time.monotonic() - start
    assert status == 206 and len(body) == 2 << 20
    assert elapsed >= 0.4, f"2 MiB at 4 MiB/s took only {elapsed:.2f} s"
    client.set_faults(throttle_bps=None)
    start = time.monotonic()
    request(
        lab.info,
        "http",
        "GET",
        folder(rel),
        {"Cookie": cookie, "Range": f"bytes=0-{(2 << 20) - 1}"},
    )
    assert time.monotonic() - start < 0.4
