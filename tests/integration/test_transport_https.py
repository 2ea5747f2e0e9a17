"""nbd / nbdssl against a real HTTP(S) file server on loopback.

The server below is a small but real peer: TLS with a certificate made by
``cryptography``, HTTP/1.1 keep-alive, Range, cookies, and fault switches (drop the
connection after N body bytes, 5xx, no HEAD, Range ignored) — what the datastore file
service does in the field. Tests against the lab and vcsim live beside it.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import os
import re
import signal
import socket
import ssl
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vcbproxy import errors
from vcbproxy.models import DatastorePath
from vcbproxy.transport import HttpOptions, ModeOptions, NfcOptions, SanOptions, create

COOKIE = 'vmware_soap_session="52e2c1a4-test"'


# --- a real file server --------------------------------------------------------------


@dataclass
class Faults:
    drop_after_bytes: int | None = None  # close the socket after this many body bytes ...
    drop_times: int = 0  # ... for this many responses
    errors_5xx: int = 0  # answer 503 this many times
    head_unsupported: bool = False  # 405 on HEAD (vcsim-like)
    ignore_range: bool = False  # always 200 with the whole file
    requests: list[str] = field(default_factory=list)
    connections: int = 0


class FileHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: FileServer

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.faults.connections += 1

    def _resolve(self) -> Path | None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if not url.path.startswith("/folder/") or "dsName" not in query:
            return None
        rel = urllib.parse.unquote(url.path[len("/folder/") :])
        path = (self.server.root / query["dsName"][0] / rel).resolve()
        if not str(path).startswith(str(self.server.root.resolve())) or not path.is_file():
            return None
        return path

    def _simple(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        faults = self.server.faults
        with self.server.lock:
            faults.requests.append(f"{self.command} {self.headers.get('Range', '-')}")
        if self.command == "HEAD" and faults.head_unsupported:
            return self._simple(405, b"method not allowed")
        if self.headers.get("Cookie") != COOKIE:
            return self._simple(401, b"no session")
        path = self._resolve()
        if path is None:
            return self._simple(404, b"not found")
        with self.server.lock:
            if faults.errors_5xx:
                faults.errors_5xx -= 1
                return self._simple(503, b"busy")
        size = path.stat().st_size
        start, end = 0, size - 1
        status = 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match and not faults.ignore_range:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        limit = None
        with self.server.lock:
            if faults.drop_times and faults.drop_after_bytes is not None:
                faults.drop_times -= 1
                limit = faults.drop_after_bytes
        with path.open("rb") as f:
            f.seek(start)
            sent = 0
            while sent < length:
                n = min(1 << 20, length - sent)
                if limit is not None:
                    n = min(n, limit - sent)
                    if n <= 0:
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                data = f.read(n)
                self.wfile.write(data)
                sent += len(data)


class FileServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, context: ssl.SSLContext | None):
        super().__init__(("127.0.0.1", 0), FileHandler)
        self.root = root
        self.lock = threading.Lock()
        self.faults = Faults()
        self.context = context

    def get_request(self):
        sock, addr = super().get_request()
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True)
        return sock, addr


def make_certificate(tmp: Path) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "server.pem", tmp / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


@dataclass
class LocalSession:
    """The attributes of vcbproxy.vsphere.session.Session that transports use."""

    host: str
    port: int
    cookie: str
    ssl_context: ssl.SSLContext | None
    datacenter: str = "ha-datacenter"
    thumbprint: str | None = None

    def file_url(
        self,
        ds_path: DatastorePath,
        scheme: str = "https",
        port: int | None = None,
        datacenter: str | None = None,
    ) -> str:
        query = urllib.parse.urlencode(
            {"dcPath": datacenter or self.datacenter, "dsName": ds_path.datastore}
        )
        return (
            f"{scheme}://{self.host}:{port or self.port}/folder/"
            f"{urllib.parse.quote(ds_path.path)}?{query}"
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pki")
    return make_certificate(tmp)


@pytest.fixture(scope="module")
def datastores(tmp_path_factory):
    root = tmp_path_factory.mktemp("volumes")
    vm = root / "datastore1" / "vm 1"
    vm.mkdir(parents=True)
    rng = os.urandom
    files = {
        "vm 1/disk-flat.vmdk": rng((5 << 20) + 12345),
        "vm 1/vm 1.vmx": b'config.version = "8"\n',
        "vm 1/empty.log": b"",
    }
    for rel, data in files.items():
        (root / "datastore1" / rel).write_bytes(data)
    (root / "datastore2").mkdir()
    return root, files


def _serve(server: FileServer):
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return thread


@pytest.fixture
def https_server(datastores, pki):
    root, _ = datastores
    cert, key, _ = pki
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = FileServer(root, context)
    _serve(server)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def http_server(datastores):
    root, _ = datastores
    server = FileServer(root, None)
    _serve(server)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def session(https_server, pki):
    context = ssl.create_default_context(cafile=str(pki[0]))
    return LocalSession("127.0.0.1", https_server.server_address[1], COOKIE, context)


FAST = ModeOptions(
    http=HttpOptions(retries=3, backoff=0.01, timeout=10),
    nfc=NfcOptions(retries=3, backoff=0.01, timeout=10),
)
DISK = DatastorePath("datastore1", "vm 1/disk-flat.vmdk")


def sha(data) -> str:
    return hashlib.sha256(data).hexdigest()


# --- tests ---------------------------------------------------------------------------


def test_nbdssl_streams_whole_file_in_one_request(session, https_server, datastores):
    expected = datastores[1]["vm 1/disk-flat.vmdk"]
    with create("nbdssl", session=session, options=FAST) as t:
        f = t.open(file=DISK)
        assert f.size == len(expected)
        before = len(https_server.faults.requests)
        chunks = list(f.stream(0, f.size))
        assert b"".join(chunks) == expected
        assert len(https_server.faults.requests) - before == 1
        assert all(len(c) == 1 << 20 for c in chunks[:-1])
        assert t.stats.bytes_read == len(expected)
        assert t.stats.retries == 0


def test_pread_and_subranges(session, datastores):
    expected = datastores[1]["vm 1/disk-flat.vmdk"]
    with create("nbdssl", session=session, options=FAST) as t:
        f = t.open(file=DISK)
        assert f.pread(0, 512) == expected[:512]
        assert f.pread(777_777, 3 << 20) == expected[777_777 : 777_777 + (3 << 20)]
        assert f.pread(f.size - 10, 100) == expected[-10:]  # short only at EOF
        assert f.pread(f.size, 100) == b""
        assert b"".join(f.stream(1000, 70_000, chunk=4096)) == expected[1000:71_000]


def test_persistent_connections_are_reused(session, https_server):
    with create("nbdssl", session=session, options=FAST) as t:
        f = t.open(file=DISK)
        for i in range(10):
            f.pread(i * 4096, 4096)
    assert https_server.faults.connections == 1


def test_streams_live_at_once_do_not_share_a_socket(session, datastores):
    expected = datastores[1]["vm 1/disk-flat.vmdk"]
    with create("nbdssl", session=session, options=FAST) as t:
        f = t.open(file=DISK)
        a = f.stream(0, 3 << 20, chunk=65536)
        b = f.stream(2 << 20, 3 << 20, chunk=65536)
        out_a, out_b = bytearray(), bytearray()
        for x, y in zip(a, b, strict=True):
            out_a += x
            out_b += y
        assert out_a == expected[: 3 << 20]
        assert out_b == expected[2 << 20 : 5 << 20]


def test_parallel_threads(session, datastores):
    expected = datastores[1]["vm 1/disk-flat.vmdk"]
    with create("nbdssl", session=session, options=FAST) as t:
        f = t.open(file=DISK)
        ranges = [(i * 300_000, 400_000) for i in range(12)]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda r: b"".join(f.stream(*r)), ranges))
        for (off, n), got in zip(ranges, results, strict=True):
            assert got == expected[off : off + n]


def test_small_and_empty_files(session, datastores):
    with create("nbdssl", session=session, options=FAST) as t:
        vmx = t.open(file=DatastorePath("datastore1", "vm 1/vm 1.vmx"))
        assert b"".join(vmx.stream(0, vmx.size)) == datastores[1]["vm 1/vm 1.vmx"]
        empty = t.open(file=DatastorePath("datastore1", "vm 1/empty.log"))
        assert empty.size == 0
        assert list(empty.stream(0, 0)) == []


def test_size_without_head(session, https_server, datastores):
    https_server.faults.head_unsupported = True
    with create("nbdssl", session=session, options=FAST) as t:
        assert t.open(file=DISK).size == len(datastores[1]["vm 1/disk-flat.vmdk"])
        assert t.open(file=DatastorePath("datastore1", "vm 1/empty.log")).size == 0
    assert any(r == "GET bytes=0-0" for r in https_server.faults.requests)


def test_dropped_connection_resumes_from_last_byte(session, https_server, datastores):
    expected = datastores[1]["vm 1/disk-flat.vmdk"]
    with create("nbdssl", session=session, options=FAST) as t:
        f = t.open(file=DISK)
        https_server.faults.drop_after_bytes = 1_500_000
        https_server.faults.drop_times = 2
        got = b"".join(f.stream(100, f.size - 100))
        assert sha(got) == sha(expected[100:])
        assert t.stats.retries == 2
    gets = [r for r in https_server.faults.requests if r.startswith("GET")]
    # each resume asks for the rest of the range, from the byte after the last one received
    assert gets[-3:] == [
        f"GET bytes=100-{len(expected) - 1}",
        f"GET bytes=1500100-{len(expected) - 1}",
        f"GET bytes=3000100-{len(expected) - 1}",
    ]


def test_drop_every_time_gives_up_naming_file_and_offset(session, https_server):
    with create("nbdssl", session=session, options=FAST) as t:
        f = t.open(file=DISK)
        https_server.faults.drop_after_bytes = 0
        https_server.faults.drop_times = 100
        with pytest.raises(errors.TransportError) as info:
            b"".join(f.stream(4096, 1 << 20))
    message = str(info.value)
    assert "[datastore1] vm 1/disk-flat.vmdk" in message
    assert "offset 4096" in message and "3 retries" in message
    assert info.value.exit_code == errors.TRANSPORT


def test_progress_resets_the_retry_budget(session, https_server, datastores):
    expected = datastores[1]["vm 1/disk-flat.vmdk"]
    with create("nbdssl", session=session, options=FAST) as t:
        f = t.open(file=DISK)
        https_server.faults.drop_after_bytes = 1 << 20  # every attempt moves 1 MiB forward
        https_server.faults.drop_times = 5  # more drops than retries=3
        assert b"".join(f.stream(0, f.size)) == expected


def test_5xx_is_retried(session, https_server, datastores):
    with create("nbdssl", session=session, options=FAST) as t:
        f = t.open(file=DISK)
        https_server.faults.errors_5xx = 2
        assert f.pread(10, 1000) == datastores[1]["vm 1/disk-flat.vmdk"][10:1010]
        assert t.stats.retries == 2


def test_server_ignoring_range_still_gives_right_bytes(session, https_server, datastores):
    https_server.faults.ignore_range = True
    with create("nbdssl", session=session, options=FAST) as t:
        f = t.open(file=DISK)
        assert f.pread(2_000_000, 5000) == datastores[1]["vm 1/disk-flat.vmdk"][2_000_000:2_005_000]


def test_expired_session_is_auth_error(session):
    session.cookie = 'vmware_soap_session="expired"'
    with (
        create("nbdssl", session=session, options=FAST) as t,
        pytest.raises(errors.AuthError, match="HTTP 401.*expired"),
    ):
        t.open(file=DISK)


def test_missing_file_is_not_found_with_datastore_path(session):
    with (
        create("nbdssl", session=session, options=FAST) as t,
        pytest.raises(errors.NotFoundError, match=r"\[datastore1\] vm 1/nope.vmdk not found"),
    ):
        t.open(file=DatastorePath("datastore1", "vm 1/nope.vmdk"))


def test_opener_resolves_names_in_the_disk_directory(session, datastores):
    with create("nbdssl", session=session, options=FAST) as t:
        opener = t.opener(directory=DatastorePath("datastore1", "vm 1"))
        assert opener("vm 1.vmx").pread(0, 100) == datastores[1]["vm 1/vm 1.vmx"]
        assert opener("/vmfs/volumes/datastore1/vm 1/vm 1.vmx").size == len(
            datastores[1]["vm 1/vm 1.vmx"]
        )
        with pytest.raises(errors.TransportError, match="leaves datastore"):
            opener("../../etc/passwd")
        with pytest.raises(errors.TransportError, match="absolute path"):
            opener("/etc/passwd")


def test_untrusted_certificate_is_refused(session):
    session.ssl_context = ssl.create_default_context()  # system store: not our CA
    with (
        create("nbdssl", session=session, options=FAST) as t,
        pytest.raises(errors.ConnectionFailure, match="TLS verification of 127.0.0.1"),
    ):
        t.open(file=DISK)


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_pinned_thumbprint_accepts_the_right_certificate(session, pki, datastores):
    session.ssl_context = _unverified_context()
    session.thumbprint = ":".join(f"{b:02X}" for b in hashlib.sha1(pki[2]).digest())
    with create("nbdssl", session=session, options=FAST) as t:
        assert t.open(file=DISK).pread(0, 10) == datastores[1]["vm 1/disk-flat.vmdk"][:10]
    session.thumbprint = hashlib.sha256(pki[2]).hexdigest()
    with create("nbdssl", session=session, options=FAST) as t:
        assert t.open(file=DISK).size > 0


def test_pinned_thumbprint_refuses_another_certificate(session):
    session.ssl_context = _unverified_context()
    session.thumbprint = "00" * 20
    with (
        create("nbdssl", session=session, options=FAST) as t,
        pytest.raises(errors.ConnectionFailure, match="not the pinned 00:00"),
    ):
        t.open(file=DISK)


def test_nbd_plain_http(http_server, datastores):
    plain = LocalSession("127.0.0.1", 1, COOKIE, None)  # SOAP port unused by nbd
    options = ModeOptions(
        http=HttpOptions(nbd_port=http_server.server_address[1], retries=2, backoff=0.01)
    )
    with create("nbd", session=plain, options=options) as t:
        f = t.open(file=DISK)
        assert sha(b"".join(f.stream(0, f.size))) == sha(datastores[1]["vm 1/disk-flat.vmdk"])
        assert t.name == "nbd"


def test_nbd_without_plain_service_is_refused_clearly(session):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = ModeOptions(http=HttpOptions(nbd_port=port, retries=2, backoff=0.01))
    with (
        create("nbd", session=session, options=options) as t,
        pytest.raises(
            errors.TransportError,
            match=f"offers no plain-HTTP file service on port {port}; use -m nbdssl",
        ),
    ):
        t.open(file=DISK)


def test_closed_transport_refuses_use(session):
    t = create("nbdssl", session=session, options=FAST)
    f = t.open(file=DISK)
    t.close()
    with pytest.raises(errors.TransportError, match="closed"):
        f.pread(0, 1)


# --- fallback chains: san first, network for what SAN cannot see ------------------------


def test_fallback_san_then_nbdssl_records_who_served(session, datastores):
    root, files = datastores
    options = ModeOptions(
        http=HttpOptions(retries=1, backoff=0.01),
        san=SanOptions(san_map={"datastore2": str(root / "datastore2")}),
    )
    with create("san:nbdssl", session=session, options=options) as t:
        f = t.open(file=DISK)  # datastore1 is not mapped: nbdssl serves it
        assert b"".join(f.stream(0, f.size)) == files["vm 1/disk-flat.vmdk"]
        (root / "datastore2" / "x.bin").write_bytes(b"san bytes")
        assert t.open(file=DatastorePath("datastore2", "x.bin")).pread(0, 100) == b"san bytes"
        assert t.served_by == {str(DISK): "nbdssl", "[datastore2] x.bin": "san"}
        assert "san: cannot serve datastore 'datastore1'" in t.reasons[str(DISK)][0]
        assert t.stats.bytes_read >= len(files["vm 1/disk-flat.vmdk"])


def test_fallback_open_failure_falls_through_and_all_failing_is_clear(session, datastores):
    root, files = datastores
    # SAN mapped to an empty directory: the file is missing there, the network has it.
    empty = root / "datastore2"
    options = ModeOptions(
        http=HttpOptions(retries=1, backoff=0.01),
        san=SanOptions(san_map={"datastore1": str(empty)}),
    )
    with create("san:nbdssl", session=session, options=options) as t:
        assert t.open(file=DISK).pread(0, 8) == files["vm 1/disk-flat.vmdk"][:8]
        assert t.served_by[str(DISK)] == "nbdssl"
        with pytest.raises(errors.NotFoundError, match="not found by any mode of san:nbdssl"):
            t.open(file=DatastorePath("datastore1", "vm 1/missing.vmdk"))


# --- NFC: a streamOptimized disk from a lease URL ----------------------------------------


class RecordingLease:
    """In-process stand-in for the host's HttpNfcLease under a real ExportLease (records the calls)."""

    def __init__(self):
        self.calls: list[tuple] = []

    def HttpNfcLeaseProgress(self, percent: int) -> None:  # noqa: N802 - the vSphere method name
        self.calls.append(("progress", percent))

    def HttpNfcLeaseComplete(self) -> None:  # noqa: N802
        self.calls.append(("complete",))

    def HttpNfcLeaseAbort(self, fault) -> None:  # noqa: N802
        self.calls.append(("abort", fault.msg))


def lease_disk(session, datastores, tmp_path, name: str, raw: bytes) -> dict:
    """``raw`` as a streamOptimized VMDK (qemu-img makes it) on datastore1, and the lease
    entry that names it, in the shape ExportLease builds: "disk" is a flag, the device key
    names the disk."""
    import subprocess

    root, _ = datastores
    (tmp_path / "disk.raw").write_bytes(raw)
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized"]
        + [str(tmp_path / "disk.raw"), str(root / "datastore1" / "vm 1" / name)],
        check=True,
    )
    return {
        "key": "/vm-1/VirtualLsiLogicController0:0",
        "disk": True,
        "target_id": "",
        "size": 0,
        "url": session.file_url(DatastorePath("datastore1", f"vm 1/{name}")),
    }


def test_nfc_streams_grains_of_a_stream_optimized_disk(session, datastores, tmp_path, monkeypatch):
    from vcbproxy.models import SnapshotRef
    from vcbproxy.transport import nfc
    from vcbproxy.vsphere.lease import ExportLease

    root, _ = datastores
    raw = bytearray(16 << 20)
    for offset in (0, 5 << 20, (16 << 20) - 65536):
        raw[offset : offset + 65536] = os.urandom(65536)
    entry = lease_disk(session, datastores, tmp_path, "export-disk.vmdk", bytes(raw))
    target = root / "datastore1" / "vm 1" / "export-disk.vmdk"
    entry["url"] = entry["url"].replace("127.0.0.1", "*", 1)  # leases say "*" for the host
    entry["target_id"] = "disk-0.vmdk"
    host_lease = RecordingLease()
    monkeypatch.setattr(nfc, "PROGRESS_EVERY", 0.0)
    with create("nfc", session=session, options=FAST) as t:
        # leaving the lease's ``with`` normally completes it: nothing else has to
        with ExportLease(
            session, host_lease, SnapshotRef(moref="snapshot-1", name="export")
        ) as lease:
            lease.device_urls = [entry]
            t.attach(lease)
            disk = t.open_disk(entry)
            assert disk.capacity == len(raw)
            rebuilt = bytearray(disk.capacity)
            for offset, data in disk.grains():
                rebuilt[offset : offset + len(data)] = data
        assert lease.done
        # config files are not in the lease: they come over the file service
        vmx = t.open(file=DatastorePath("datastore1", "vm 1/vm 1.vmx"))
        assert vmx.pread(0, 100) == datastores[1]["vm 1/vm 1.vmx"]
    assert rebuilt == raw
    assert host_lease.calls[-2:] == [("progress", 100), ("complete",)]
    assert any(c[0] == "progress" and c[1] < 100 for c in host_lease.calls)
    # the transport counts every byte it fetched: the lease stream and the .vmx read after it
    assert t.stats.bytes_read == target.stat().st_size + len(datastores[1]["vm 1/vm 1.vmx"])


class CtrlCLease(RecordingLease):
    """A host lease during whose calls the user presses Ctrl-C: a real SIGINT to this
    process, turned into ``errors.Interrupted`` by the real handler while the call waits."""

    def _interrupt(self) -> None:
        if len(self.calls) == 1:  # the first call only: a swallowed Ctrl-C lets the copy end
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2)  # the handler raises here, long before this is over

    def HttpNfcLeaseProgress(self, percent: int) -> None:  # noqa: N802
        super().HttpNfcLeaseProgress(percent)
        self._interrupt()

    def HttpNfcLeaseAbort(self, fault) -> None:  # noqa: N802
        super().HttpNfcLeaseAbort(fault)
        self._interrupt()


def test_ctrl_c_during_a_lease_progress_call_stops_the_copy(
    session, datastores, tmp_path, monkeypatch
):
    """A failed progress call is only a warning (the lease lives on), but a Ctrl-C during
    one must stop the copy: the first signal handler ignores every later one."""
    from vcbproxy.jobs.signals import signals_raise
    from vcbproxy.models import SnapshotRef
    from vcbproxy.transport import nfc
    from vcbproxy.vsphere.lease import ExportLease

    entry = lease_disk(session, datastores, tmp_path, "export-ctrl-c.vmdk", os.urandom(4 << 20))
    host_lease = CtrlCLease()
    monkeypatch.setattr(nfc, "PROGRESS_EVERY", 0.0)
    grains = 0
    with create("nfc", session=session, options=FAST) as t:
        lease = ExportLease(session, host_lease, SnapshotRef(moref="snapshot-1", name="export"))
        lease.device_urls = [entry]
        t.attach(lease)
        disk = t.open_disk(entry)
        with signals_raise(), pytest.raises(errors.Interrupted):
            for _ in disk.grains():
                grains += 1
        disk.close()
    assert host_lease.calls[0][0] == "progress" and grains == 1


def test_ctrl_c_while_a_lease_is_aborted_is_not_swallowed():
    """Aborting a lease on a failure path never masks that failure with its own, but a
    Ctrl-C during the abort is the user's, not the abort's."""
    from vcbproxy.jobs.signals import signals_raise
    from vcbproxy.models import SnapshotRef
    from vcbproxy.vsphere.lease import ExportLease

    host_lease = CtrlCLease()
    lease = ExportLease(None, host_lease, SnapshotRef(moref="snapshot-1", name="export"))
    with signals_raise(), pytest.raises(errors.Interrupted):
        lease.abort("the copy failed")
    assert host_lease.calls == [("abort", "the copy failed")]


def test_nfc_disk_closed_before_its_first_grain_closes_its_connection(
    session, datastores, tmp_path
):
    entry = lease_disk(session, datastores, tmp_path, "export-small.vmdk", os.urandom(1 << 20))
    with create("nfc", session=session, options=FAST) as t:
        disk = t.open_disk(entry)
        assert disk.capacity == 1 << 20 and disk._conn.sock is not None
        # what the export does on a capacity mismatch: close without ever calling grains()
        disk.close()
        assert disk._conn.sock is None
