"""Every transport mode (issue 4) against the lab, end to end: the same oracle as network mode.

A real CLI process per export; the lab's datastores are read straight from their directories
(san), through a real OpenSSH sshd serving them under a ``/vmfs/volumes``-like root (ssh), or
through an ExportSnapshot lease (nfc). The lab's oracle and qemu-img judge every byte.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.cli import run, start
from tests.e2e.oracle import (
    assert_export_matches_lab,
    metadata,
    qemu_compare,
    raw_sha256,
    vcb_snapshots,
)
from tests.e2e.test_export import Churn, assert_clean_failure

MODES = ["nbdssl", "nbd", "san", "ssh", "nfc", "san:nbdssl"]
VM = "web01"  # two disks: one on datastore1, one on datastore2


def ssh_args(sshd, *, known_hosts: bool = True) -> list[str]:
    args = [
        "--ssh-host",
        sshd.host,
        "--ssh-port",
        str(sshd.port),
        "--ssh-user",
        sshd.user,
        "--ssh-key",
        sshd.client_key,
        "--ssh-root",
        sshd.root,
    ]
    if known_hosts:
        args += ["--ssh-known-hosts", sshd.known_hosts]
    return args


def san_args(lab, only: tuple[str, ...] | None = None) -> list[str]:
    args = []
    for name, path in lab.info["datastores"].items():
        if only is None or name in only:
            args += ["--san-map", f"{name}={path}"]
    return args


def mode_args(mode: str, lab, request) -> list[str]:
    """``-m MODE`` plus whatever the modes of the chain need to reach the lab."""
    args = ["-m", mode]
    names = mode.split(":")
    if "nbd" in names:
        args += ["--nbd-port", str(lab.info["http_port"])]
    if "san" in names:
        args += san_args(lab)
    if "ssh" in names:
        args += ssh_args(request.getfixturevalue("lab_sshd"))
    return args


def disk_sources(meta: dict) -> dict[str, list[str]]:
    """device → the datastore paths ("[ds] dir/file") of every layer the export read."""
    return {d["device"]: d["source"] for d in meta["disks"] if not d.get("skipped")}


def assert_clean(lab_client, target: Path) -> None:
    """No _VCB-BACKUP_ snapshot left on the VM, no .partial file left in the export."""
    assert not vcb_snapshots(lab_client, VM)
    assert not list(target.rglob("*.partial"))


# -- 1. one body, every mode -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_exports_the_disk_at_the_snapshot_while_the_guest_writes(
    env, lab, lab_client, request, tmp_path, mode
):
    target = tmp_path / "web01-fullVM"
    args = mode_args(mode, lab, request)
    lab_client.set_faults(throttle_bps=24 << 20)  # lets churn land mid-copy in network modes
    with Churn(lab_client, VM) as churn:
        res = run(env, "mount", "-a", f"name:{VM}", "-r", str(target), *args, "-q")
    assert res.code == 0, res
    assert churn.bytes > 0
    meta = assert_export_matches_lab(target, lab_client, tmp_path)
    assert meta["transport"]["mode"] == mode
    assert_clean(lab_client, target)
    if ":" in mode:
        served = meta["transport"]["served_by"]
        for device, sources in disk_sources(meta).items():
            # every layer of every disk was served, and by a mode of the chain (san: mapped)
            for source in sources:
                assert served.get(source) == "san", (device, source, served)


def _bytes_in_nonzero_blocks(raw: Path, block: int = 64 << 10) -> int:
    zero = bytes(block)
    total = 0
    with raw.open("rb") as f:
        for piece in iter(lambda: f.read(block), b""):
            if piece != zero[: len(piece)]:
                total += len(piece)
    return total


@pytest.mark.parametrize("mode", ["nbdssl", "ssh", "san"])
def test_with_cbt_on_only_the_allocated_areas_are_read(
    env, lab, lab_client, tmp_path, request, mode
):
    """With changed block tracking on at the snapshot, the host's allocation map (change ID
    "*") decides what is read: the ~40 % of each disk that holds data, not the whole disk,
    over every transport; the export is still the disk byte for byte."""
    vm = "files01"  # no other test writes to it: its disk stays about 40 % allocated
    assert run(env, "cbt", "enable", "-a", f"name:{vm}").code == 0
    lab_client.churn(vm, 1, seed=41)  # written while tracking, on top of the base
    target = tmp_path / f"{mode}-fullVM"
    res = run(
        env,
        "mount",
        "-a",
        f"name:{vm}",
        "-r",
        str(target),
        "--format",
        "flat",
        "-q",
        *mode_args(mode, lab, request),
    )
    assert res.code == 0, res
    meta = assert_export_matches_lab(target, lab_client, tmp_path)
    for disk in meta["disks"]:
        truth = lab_client.oracle(snapshot=meta["snapshot"]["moref"], key=disk["key"], raw=True)
        holding_data = _bytes_in_nonzero_blocks(Path(truth["path"]))
        assert disk["allocation_map"] is True, disk
        # Holes shorter than a request's cost are read rather than skipped: none with san,
        # up to 64 KiB with nbdssl; ssh reads holes below 32 MiB (all of these small disks).
        if mode == "san":
            assert 0 < disk["bytes_read"] <= holding_data + (1 << 20), (disk, holding_data)
        elif mode == "nbdssl":
            assert 0 < disk["bytes_read"] < disk["capacity"], (disk, holding_data)
        assert holding_data < 0.8 * disk["capacity"], (disk, holding_data)
    if mode == "nbdssl":
        everything = tmp_path / "all-blocks-fullVM"
        res = run(
            env,
            "mount",
            "-a",
            f"name:{vm}",
            "-r",
            str(everything),
            "--format",
            "flat",
            "-q",
            "--read-all-blocks",
            *mode_args(mode, lab, request),
        )
        assert res.code == 0, res
        for disk in assert_export_matches_lab(everything, lab_client, tmp_path)["disks"]:
            assert disk["allocation_map"] is False, disk
            assert disk["bytes_read"] == disk["capacity"], disk


@pytest.mark.parametrize("fmt", ["flat", "2gbsparse"])
def test_san_checksum_none_copies_exactly_and_leaves_the_disks_out_of_the_manifest(
    env, lab, lab_client, tmp_path, fmt
):
    target = tmp_path / "web01-fullVM"
    res = run(
        env,
        "mount",
        "-a",
        f"name:{VM}",
        "-r",
        str(target),
        "-m",
        "san",
        *san_args(lab),
        "--format",
        fmt,
        "--checksum",
        "none",
        "-q",
    )
    assert res.code == 0, res
    meta = metadata(target)
    assert meta["checksum"] == "none"
    manifest = (target / "MANIFEST.sha256").read_text()
    for disk in meta["disks"]:
        assert disk["content_sha256"] == "", disk
        truth = lab_client.oracle(snapshot=meta["snapshot"]["moref"], key=disk["key"], raw=True)
        assert raw_sha256(target / disk["files"][0], tmp_path) == truth["sha256"], disk
        qemu_compare(target / disk["files"][0], truth["path"])
        for name in disk["files"]:
            assert f"  {name}\n" not in manifest, name
    assert "  vcbproxy.json\n" in manifest and ".vmx\n" in manifest

    res = run(env, "verify", str(target))
    assert res.code == 0, res
    assert "--checksum none" in res.err, res
    vmx = next(target.glob("*.vmx"))
    vmx.write_text(vmx.read_text() + "# tampered\n")
    res = run(env, "verify", str(target))  # what is listed is still checked
    assert res.code == 16 and f"changed: {vmx.name}" in res.out, res


@pytest.mark.parametrize("fmt", ["stream", "2gbsparse"])
def test_nfc_lease_stored_as_stream_or_converted_while_streaming(env, lab_client, tmp_path, fmt):
    target = tmp_path / "nfc"
    with Churn(lab_client, VM):
        res = run(
            env, "mount", "-a", f"name:{VM}", "-r", str(target), "-m", "nfc", "--format", fmt, "-q"
        )
    assert res.code == 0, res
    meta = assert_export_matches_lab(target, lab_client, tmp_path)
    assert meta["format_written"] == fmt and meta["transport"]["mode"] == "nfc"
    if fmt == "stream":
        for disk in meta["disks"]:
            assert 'createType="streamOptimized"' in (target / disk["files"][0]).read_bytes()[
                :4096
            ].decode("latin-1"), disk
    assert_clean(lab_client, target)


# -- 2. SAN: an unmapped datastore fails alone, or falls back ---------------------------------


def test_san_with_an_unmapped_datastore_names_it_and_exits_13(env, lab, lab_client, tmp_path):
    target = tmp_path / "o"
    res = run(
        env,
        "mount",
        "-a",
        f"name:{VM}",
        "-r",
        str(target),
        "-m",
        "san",
        *san_args(lab, only=("datastore1",)),
    )
    assert_clean_failure(res, 13, "datastore2", lab_client, VM, target)
    assert "not mapped" in res.err and "--san-map datastore2=" in res.err, res


def datastore_urls(si, datacenter: str) -> dict[str, str]:
    """{name: "ds:///vmfs/volumes/<uuid>/"} of one datacenter's datastores, as the server
    reports them, read with pyVmomi (names repeat across datacenters: the lab has two
    datastore1)."""
    dc = si.RetrieveContent().searchIndex.FindByInventoryPath(datacenter)
    return {ds.name: ds.summary.url for ds in dc.datastore}


def test_san_map_by_datastore_url_reads_the_datastores_it_names(
    env, lab, lab_si, lab_client, tmp_path
):
    """``--san-map ds:///vmfs/volumes/<uuid>/=PATH``: a mapping that survives a datastore's
    rename. The server says which datastore has which URL."""
    urls = datastore_urls(lab_si, lab.info["datacenter"])
    assert set(urls) == set(lab.info["datastores"]) and all(
        u.startswith("ds:///vmfs/volumes/") for u in urls.values()
    )

    def mount_san(target: Path, maps: dict[str, str]):
        args = [arg for url, path in maps.items() for arg in ("--san-map", f"{url}={path}")]
        return run(env, "mount", "-a", f"name:{VM}", "-r", str(target), "-m", "san", *args, "-q")

    target = tmp_path / "o"
    res = mount_san(target, {urls[n]: p for n, p in lab.info["datastores"].items()})
    assert res.code == 0, res
    meta = assert_export_matches_lab(target, lab_client, tmp_path)
    assert meta["transport"]["mode"] == "san"
    assert_clean(lab_client, target)
    # A URL no datastore has maps nothing: the datastore is named as unmapped.
    res = mount_san(tmp_path / "none", {"ds:///vmfs/volumes/no-such-uuid/": str(tmp_path)})
    assert_clean_failure(res, 13, "not mapped", lab_client, VM, tmp_path / "none")


def test_san_disk_shorter_than_its_descriptor_is_a_transport_error_not_a_crash(
    env, lab, lab_client, tmp_path
):
    """A flat extent cut short on the storage: exit 13 naming the disk, snapshot removed,
    nothing staged (it used to escape as a bare ValueError: exit 1, "a bug")."""
    import shutil

    source = Path(lab.info["datastores"]["datastore2"]) / "files01"
    copy = tmp_path / "ds2"
    shutil.copytree(source, copy / "files01")
    flat = next((copy / "files01").glob("*-flat.vmdk"))
    os.truncate(flat, flat.stat().st_size // 2)
    target = tmp_path / "o"
    res = run(
        env,
        "mount",
        "-a",
        "name:files01",
        "-r",
        str(target),
        "-m",
        "san",
        "--san-map",
        f"datastore2={copy}",
        "--read-all-blocks",
    )
    assert_clean_failure(res, 13, "cannot read the disk", lab_client, "files01", target)


def test_san_chain_falls_back_to_nbdssl_for_the_unmapped_datastore(env, lab, lab_client, tmp_path):
    target = tmp_path / "o"
    res = run(
        env,
        "mount",
        "-a",
        f"name:{VM}",
        "-r",
        str(target),
        "-m",
        "san:nbdssl",
        *san_args(lab, only=("datastore1",)),
        "-q",
    )
    assert res.code == 0, res
    meta = assert_export_matches_lab(target, lab_client, tmp_path)
    served = meta["transport"]["served_by"]
    modes_by_datastore: dict[str, set[str]] = {}
    for sources in disk_sources(meta).values():
        for source in sources:
            datastore = source[1 : source.index("]")]
            modes_by_datastore.setdefault(datastore, set()).add(served[source])
    assert modes_by_datastore == {"datastore1": {"san"}, "datastore2": {"nbdssl"}}, served
    assert_clean(lab_client, target)


def test_ctrl_c_while_a_chains_first_mode_connects_is_not_a_fallback(env, lab_client, tmp_path):
    """-m ssh:nbdssl with an SSH host that accepts the connection and never answers: Ctrl-C
    while the export waits for it must stop the export (130, snapshot removed, nothing left),
    not count as "ssh failed, trying the next mode" and go on over nbdssl."""
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody speaks
    target = tmp_path / "o"
    try:
        proc = start(
            env,
            "mount",
            "-a",
            f"name:{VM}",
            "-r",
            str(target),
            "-m",
            "ssh:nbdssl",
            "--ssh-host",
            "127.0.0.1",
            "--ssh-port",
            str(silent.getsockname()[1]),
            "--ssh-fingerprint",
            "SHA256:" + "A" * 43,
            "--timeout",
            "10",  # bounds the run should the interrupt be swallowed and ssh tried again
            "-q",
        )
        silent.settimeout(120)
        waiting, _ = silent.accept()  # the export is now waiting for the SSH banner
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        waiting.close()
    finally:
        silent.close()
    assert proc.returncode == 130, err
    assert "trying the next mode" not in err and "Traceback" not in err
    assert not target.exists()
    assert not vcb_snapshots(lab_client, VM)


# -- 3. SSH: host keys and a dropped connection ----------------------------------------------


def test_ssh_unknown_host_key_is_refused_naming_its_fingerprint(
    env, lab_sshd, lab_client, tmp_path
):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    target = tmp_path / "o"
    res = run(
        env,
        "mount",
        "-a",
        f"name:{VM}",
        "-r",
        str(target),
        "-m",
        "ssh",
        *ssh_args(lab_sshd, known_hosts=False),
        "--ssh-known-hosts",
        str(empty),
    )
    assert_clean_failure(res, 18, lab_sshd.host_key_fingerprint, lab_client, VM, target)
    assert "--ssh-fingerprint" in res.err
    assert empty.read_text() == ""  # nothing recorded without --ssh-accept-new


def test_ssh_fingerprint_pin_replaces_known_hosts(env, lab_sshd, lab_client, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    target = tmp_path / "o"
    res = run(
        env,
        "mount",
        "-a",
        f"name:{VM}",
        "-r",
        str(target),
        "-m",
        "ssh",
        *ssh_args(lab_sshd, known_hosts=False),
        "--ssh-known-hosts",
        str(empty),
        "--ssh-fingerprint",
        lab_sshd.host_key_fingerprint,
        "-q",
    )
    assert res.code == 0, res
    assert_export_matches_lab(target, lab_client, tmp_path)
    # a wrong pin is refused even though the key is in known_hosts
    wrong = "SHA256:" + "A" * 43
    res = run(
        env,
        "mount",
        "-a",
        f"name:{VM}",
        "-r",
        str(tmp_path / "o2"),
        "-m",
        "ssh",
        *ssh_args(lab_sshd),
        "--ssh-fingerprint",
        wrong,
    )
    assert_clean_failure(res, 18, "pinned", lab_client, VM, tmp_path / "o2")


class SlowLink:
    """A loopback TCP relay to sshd that passes server→proxy bytes at ``rate`` bytes/s.

    The lab's disks are small and sshd on loopback sends them in milliseconds; through this
    link a disk takes seconds, so a test can drop sshd's connections while one is copying.
    Real sockets and the real sshd on the other side: it only slows the wire down.
    """

    def __init__(self, upstream: tuple[str, int], rate: int):
        self.upstream, self.rate = upstream, rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for src, dst, rate in ((client, server, None), (server, client, self.rate)):
                threading.Thread(target=self._pump, args=(src, dst, rate), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, rate: int | None) -> None:
        try:
            while data := src.recv(16 << 10):
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for sock in (src, dst):  # one side gone: the link is gone
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


def test_ssh_connection_dropped_mid_disk_resumes_and_stays_exact(
    env, lab_sshd, lab_client, tmp_path
):
    link = SlowLink((lab_sshd.host, lab_sshd.port), rate=8 << 20)
    known = tmp_path / "known_hosts"  # the host key, recorded for the relay's port
    host_key = Path(lab_sshd.known_hosts).read_text().split()[1:3]
    known.write_text(f"[127.0.0.1]:{link.port} {' '.join(host_key)}\n")
    target = tmp_path / "o"
    args = ssh_args(lab_sshd, known_hosts=False)
    args[args.index("--ssh-port") + 1] = str(link.port)
    proc = start(
        env,
        "mount",
        "-a",
        f"name:{VM}",
        "-r",
        str(target),
        "-m",
        "ssh",
        *args,
        "--ssh-known-hosts",
        str(known),
        "-q",
    )
    killed = []

    def drop_once_a_disk_is_copying():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if list(target.glob("*.vmdk.partial")) if target.exists() else []:
                time.sleep(0.2)  # well into the disk (~1 s at 8 MiB/s)
                killed.append(lab_sshd.kill_connections())
                killed.append(bool(list(target.glob("*.vmdk.partial"))))  # still mid-disk
                return
            time.sleep(0.01)

    killer = threading.Thread(target=drop_once_a_disk_is_copying, daemon=True)
    killer.start()
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        killer.join(5)
        link.close()
    assert proc.returncode == 0, err
    assert killed and killed[0] > 0 and killed[1], f"no connection was dropped mid-disk: {killed}"
    meta = assert_export_matches_lab(target, lab_client, tmp_path)
    assert meta["transport"]["retries"] >= 1
    assert_clean(lab_client, target)


# -- 4. hotadd is refused, not faked ---------------------------------------------------------


def test_hotadd_is_refused_naming_the_modes_that_work(env, lab_client, tmp_path):
    target = tmp_path / "o"
    res = run(env, "mount", "-a", f"name:{VM}", "-r", str(target), "-m", "hotadd")
    assert_clean_failure(res, 19, "hotadd", lab_client, VM, target)
    for mode in ("nbdssl", "nbd", "san", "ssh", "nfc"):
        assert mode in res.err, res


# -- 5. NFC lease lifecycle ------------------------------------------------------------------


def leases(lab_client) -> dict[str, dict]:
    """The VM's NFC leases as the lab reports them: {id: {"state": ready|done|error, ...}}."""
    return {lease["id"]: lease for lease in lab_client.state(VM).get("leases", [])}


def new_lease_states(lab_client, before: dict) -> list[str]:
    state = lab_client.state(VM)
    assert "leases" in state, f"the lab's /lab/state does not report NFC leases: {sorted(state)}"
    return [lease["state"] for lease in state["leases"] if lease["id"] not in before]


def test_nfc_lease_completed_on_success(env, lab_client, tmp_path):
    before = leases(lab_client)
    res = run(env, "mount", "-a", f"name:{VM}", "-r", str(tmp_path / "o"), "-m", "nfc", "-q")
    assert res.code == 0, res
    assert new_lease_states(lab_client, before) == ["done"]
    assert [
        lease["progress"] for key, lease in leases(lab_client).items() if key not in before
    ] == [100]


def test_nfc_lease_outlives_its_timeout_through_progress_calls(env, lab_client, tmp_path):
    """A disk that streams for longer than the lease timeout: only progress calls keep it."""
    timeout = 3.0  # > the transport's 2 s between progress calls
    saved = lab_client.faults().get("lease_timeout", 300)
    before = leases(lab_client)
    lab_client.set_faults(lease_timeout=timeout, throttle_bps=1 << 20)
    try:
        target = tmp_path / "o"
        res = run(env, "mount", "-a", f"name:{VM}", "-r", str(target), "-m", "nfc", "-q")
    finally:
        lab_client.set_faults(lease_timeout=saved)
    assert res.code == 0, res
    meta = assert_export_matches_lab(target, lab_client, tmp_path)
    assert max(d["seconds"] for d in meta["disks"]) > timeout, meta["disks"]
    assert new_lease_states(lab_client, before) == ["done"]


def test_nfc_stream_dropped_fails_cleanly_and_aborts_the_lease(env, lab_client, tmp_path):
    before = leases(lab_client)
    lab_client.set_faults(drop_after_bytes=256 << 10, drop_count=0)
    target = tmp_path / "o"
    res = run(env, "mount", "-a", f"name:{VM}", "-r", str(target), "-m", "nfc", "--retries", "1")
    assert_clean_failure(res, 13, "NFC", lab_client, VM, target)
    assert new_lease_states(lab_client, before) == ["error"]


# -- 6. NFC --format stream: the host's stream stored as it came ------------------------------


def lease_streams(lab, out_dir: Path) -> dict[int, Path]:
    """{device key: file} of VM's disks as the lab's NFC lease serves them, fetched raw with
    http.client (nothing of vcbproxy's parses them) from an ExportSnapshot lease of a fresh
    snapshot, which is removed again."""
    import http.client
    import ssl
    from urllib.parse import urlsplit

    from vcbproxy.models import ServerSpec
    from vcbproxy.selectors import parse_selector
    from vcbproxy.vsphere.inventory import resolve_vm
    from vcbproxy.vsphere.lease import ExportLease
    from vcbproxy.vsphere.session import Session
    from vcbproxy.vsphere.snapshots import create_snapshot, remove_snapshot

    info = lab.info
    opts = ServerSpec(
        server=f"127.0.0.1:{info['https_port']}",
        user=info["user"],
        password=Path(info["password_file"]).read_text().strip(),
        ca_file=info["cert_file"],
    )
    files = {}
    with Session.connect(opts) as session:
        vm = resolve_vm(session, parse_selector(f"name:{VM}"))
        snap = create_snapshot(session, vm, "nfc-raw")
        try:
            with ExportLease.for_snapshot(session, snap) as lease:
                for entry in (e for e in lease.device_urls if e["disk"]):
                    path = urlsplit(entry["url"]).path  # /nfc/<lease>/<key>.vmdk
                    key = int(path.rsplit("/", 1)[1].split(".")[0])
                    conn = http.client.HTTPSConnection(
                        "127.0.0.1",
                        int(info["https_port"]),
                        timeout=60,
                        context=ssl.create_default_context(cafile=info["cert_file"]),
                    )
                    try:
                        conn.request("GET", path, headers={"Cookie": session.cookie})
                        resp = conn.getresponse()
                        assert resp.status == 200, (path, resp.status)
                        files[key] = out_dir / f"{key}.vmdk"
                        with open(files[key], "wb") as f:
                            while block := resp.read(1 << 20):
                                f.write(block)
                    finally:
                        conn.close()
                lease.complete()
        finally:
            remove_snapshot(session, snap.moref)
    return files


HEAD = 64 << 10  # header + embedded descriptor: the lab's grains start after this


def without_ids(vmdk: bytes) -> bytes:
    """The file with the embedded descriptor's CID, ddb.uuid and ddb.longContentID blanked: the
    lab draws them at random for every download, so two downloads of the same content differ
    only there."""
    import re

    head = re.sub(rb"(?m)^CID=[0-9a-fA-F]+$", b"CID=*", vmdk[:HEAD])
    head = re.sub(rb'(?m)^ddb\.(uuid|longContentID) = "[^"]*"$', rb'ddb.\1 = "*"', head)
    return head + vmdk[HEAD:]


def test_nfc_format_stream_stores_the_hosts_bytes_as_they_came(env, lab, lab_client, tmp_path):
    target = tmp_path / "o"
    res = run(
        env, "mount", "-a", f"name:{VM}", "-r", str(target), "-m", "nfc", "--format", "stream", "-q"
    )
    assert res.code == 0, res
    meta = assert_export_matches_lab(target, lab_client, tmp_path)  # hash + qemu-img compare
    # No guest writes since: a second lease serves the same content, so the same stream,
    # byte for byte apart from the IDs the lab draws afresh. A re-encoded file (our own
    # descriptor, grain layout or compression) differs everywhere.
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    served = lease_streams(lab, raw_dir)
    disks = [d for d in meta["disks"] if not d.get("skipped")]
    assert sorted(served) == sorted(d["key"] for d in disks)
    vmx = (target / next(p.name for p in target.glob("*.vmx"))).read_text()
    for disk in disks:
        assert disk["files"] == [f"{disk['files'][0]}"]  # one file, no extents
        stored = (target / disk["files"][0]).read_bytes()
        host = served[disk["key"]].read_bytes()
        assert len(stored) == len(host), disk["device"]
        assert without_ids(stored) == without_ids(host), disk["device"]
        assert f'{disk["device"]}.fileName = "{disk["files"][0]}"'.lower() in vmx.lower(), vmx
    assert run(env, "verify", str(target)).code == 0
    assert_clean(lab_client, target)


def test_nfc_format_stream_dropped_mid_disk_leaves_no_file(env, lab_client, tmp_path):
    before = leases(lab_client)
    lab_client.set_faults(drop_after_bytes=256 << 10, drop_count=0)
    target = tmp_path / "o"
    res = run(
        env,
        "mount",
        "-a",
        f"name:{VM}",
        "-r",
        str(target),
        "-m",
        "nfc",
        "--format",
        "stream",
        "--retries",
        "1",
    )
    assert_clean_failure(res, 13, "NFC", lab_client, VM, target)
    assert "broke after" in res.err, res  # cut inside the stream, not before it
    assert not target.exists() or not list(target.rglob("*")), list(target.rglob("*"))
    assert new_lease_states(lab_client, before) == ["error"]
