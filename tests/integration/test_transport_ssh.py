"""SSH mode against a real OpenSSH sshd (the ``sshd`` fixture) on loopback."""

from __future__ import annotations

import hashlib
import os

import pytest

from vcbproxy import errors
from vcbproxy.models import DatastorePath
from vcbproxy.transport import ModeOptions, create, sshstream
from vcbproxy.transport import ssh as ssh_module

MiB = 1 << 20
DS = "transport-ssh-ds"
DIR = "vm 'one' $(x)"  # quoting must survive a hostile-looking name
BIG = 48 * MiB  # more than the 16 MiB window: a kill hits mid-stream


@pytest.fixture(scope="module")
def files(sshd):
    root = sshd.volumes_root / DS / DIR
    root.mkdir(parents=True, exist_ok=True)
    data = {
        "disk-flat.vmdk": os.urandom(BIG + 4321),
        "vm.vmx": b'displayName = "one"\n',
        "empty.log": b"",
    }
    for name, content in data.items():
        (root / name).write_bytes(content)
    return data


def options(sshd, **kw) -> ModeOptions:
    return sshd.options(**kw)


DISK = DatastorePath(DS, f"{DIR}/disk-flat.vmdk")


def digest(chunks) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def force_reader(t, reader: str) -> None:
    """Start the fallback chain at ``reader``, as on a host without the better ones."""
    t._readers = list(sshstream.READERS[sshstream.READERS.index(reader) :])


@pytest.mark.parametrize("reader", sshstream.READERS)
def test_stream_is_byte_exact(sshd, files, reader):
    expected = files["disk-flat.vmdk"]
    with create("ssh", session=None, options=options(sshd)) as t:
        force_reader(t, reader)
        f = t.open(file=DISK)
        assert f.size == len(expected)
        assert digest(f.stream(0, f.size)) == hashlib.sha256(expected).hexdigest()
        assert f.pread(MiB - 7, 5000) == expected[MiB - 7 : MiB - 7 + 5000]
        assert f.pread(f.size - 5, 100) == expected[-5:]
        assert f.pread(3 * MiB + 1, 2 * MiB) == expected[3 * MiB + 1 : 5 * MiB + 1]
        assert b"".join(f.stream(12345, 300_000, chunk=65536)) == expected[12345:312_345]
        assert t.reader == reader and t._reader_confirmed
        assert t.stats.bytes_read >= len(expected)


def test_small_and_empty_files(sshd, files):
    with create("ssh", session=None, options=options(sshd)) as t:
        opener = t.opener(directory=DatastorePath(DS, DIR))
        vmx = opener("vm.vmx")
        assert b"".join(vmx.stream(0, vmx.size)) == files["vm.vmx"]
        empty = opener("empty.log")
        assert empty.size == 0 and list(empty.stream(0, 0)) == []


@pytest.fixture(scope="module")
def mostly_zeros(sshd):
    """1 MiB data, 12 MiB zeros (written, not a hole), 1 MiB data, and an odd tail."""
    data = os.urandom(MiB) + bytes(12 * MiB) + os.urandom(MiB) + bytes(1000) + b"end"
    (sshd.volumes_root / DS / DIR / "zeros-flat.vmdk").write_bytes(data)
    return data


@pytest.mark.parametrize("chunk", [MiB, 100_000])
def test_python_reader_sends_zero_blocks_as_records(sshd, files, mostly_zeros, chunk):
    with create("ssh", session=None, options=options(sshd)) as t:
        f = t.open(file=DatastorePath(DS, f"{DIR}/zeros-flat.vmdk"))
        chunks = list(f.stream(0, f.size, chunk=chunk))
        assert b"".join(chunks) == mostly_zeros
        assert max(map(len, chunks)) <= chunk
        assert t.reader == "python"
        # the 12 MiB of zeros crossed as records: a few bytes each, not the zeros
        assert t.stats.bytes_on_wire < 2 * MiB + 70_000, t.stats
        assert t.stats.bytes_read == len(mostly_zeros)


def test_ssh_reader_dd_sends_every_byte(sshd, files, mostly_zeros):
    with create("ssh", session=None, options=options(sshd, reader="dd")) as t:
        f = t.open(file=DatastorePath(DS, f"{DIR}/zeros-flat.vmdk"))
        assert b"".join(f.stream(0, f.size)) == mostly_zeros
        assert t.reader == "dd"
        assert t.stats.bytes_on_wire == len(mostly_zeros)


def test_a_host_without_python_falls_back_to_dd_then_tail(sshd, files, monkeypatch):
    expected = files["disk-flat.vmdk"]
    monkeypatch.setattr(sshstream, "PYTHONS", ("no-such-python3",))  # the shell exits 127
    with create("ssh", session=None, options=options(sshd)) as t:
        f = t.open(file=DISK)
        assert f.pread(2 * MiB, 3 * MiB) == expected[2 * MiB : 5 * MiB]
        assert t.reader == "dd"
    monkeypatch.setattr(sshstream, "DD_FLAGS", "no_such_flag")  # busybox-like dd
    with create("ssh", session=None, options=options(sshd)) as t:
        f = t.open(file=DISK)
        assert digest(f.stream(7, f.size - 7)) == hashlib.sha256(expected[7:]).hexdigest()
        assert t.reader == "tail"


def test_a_python_that_cannot_run_the_script_falls_back_to_dd(sshd, files, monkeypatch):
    expected = files["disk-flat.vmdk"]
    monkeypatch.setattr(sshstream, "READER_SCRIPT", "import sys; sys.exit(1)")
    with create("ssh", session=None, options=options(sshd)) as t:
        assert t.open(file=DISK).pread(MiB, 1000) == expected[MiB : MiB + 1000]
        assert t.reader == "dd"


def test_a_listing_script_that_fails_leaves_stat_to_list(sshd, files, monkeypatch):
    monkeypatch.setattr(sshstream, "LISTING_SCRIPT", "import sys; sys.exit(1)")
    with create("ssh", session=None, options=options(sshd)) as t:
        opened = {name: t.open(file=DatastorePath(DS, f"{DIR}/{name}")) for name in files}
        assert {name: f.size for name, f in opened.items()} == {n: len(d) for n, d in files.items()}
        assert t.stats.requests == 1  # still one command for every size


def test_a_garbled_stream_is_retried_then_reported_never_waited_on(sshd, files, monkeypatch):
    """A reader printing nonsense without end: the proxy must not wait for its exit."""
    monkeypatch.setattr(
        sshstream,
        "READER_SCRIPT",
        (
            "import sys\nout = getattr(sys.stdout, 'buffer', sys.stdout)\n"
            "while True:\n    out.write(b'\\x07' * 65536)\n"
        ),
    )
    with create("ssh", session=None, options=options(sshd, retries=2, timeout=10)) as t:
        f = t.open(file=DISK)
        with pytest.raises(errors.TransportError, match="garbled"):
            f.pread(0, 100)
        assert t.stats.retries >= 2


def test_a_file_the_host_cannot_read_is_reported_with_its_error(sshd, files):
    (sshd.volumes_root / DS / DIR / "adir-flat.vmdk").mkdir(exist_ok=True)
    with create("ssh", session=None, options=options(sshd)) as t:
        f = t.open(file=DatastorePath(DS, f"{DIR}/adir-flat.vmdk"))
        with pytest.raises(errors.TransportError, match="[Ii]s a directory"):
            f.pread(0, 10)
        assert t.reader == "python"  # a failed read is not a missing reader


def test_parallel_channels_yield_in_order(sshd, files, monkeypatch):
    monkeypatch.setattr(ssh_module, "SEGMENT", 4 * MiB)
    monkeypatch.setattr(ssh_module, "PARALLEL_MIN", 8 * MiB)
    expected = files["disk-flat.vmdk"]
    with create("ssh", session=None, options=options(sshd, channels=3)) as t:
        f = t.open(file=DISK)
        start = 777
        assert (
            digest(f.stream(start, 30 * MiB))
            == hashlib.sha256(expected[start : start + 30 * MiB]).hexdigest()
        )
        assert t.stats.requests >= 8  # several segments, several commands


def test_connection_killed_mid_stream_resumes(sshd, files):
    expected = files["disk-flat.vmdk"]
    with create("ssh", session=None, options=options(sshd)) as t:
        f = t.open(file=DISK)
        h = hashlib.sha256()
        for i, chunk in enumerate(f.stream(0, f.size)):
            h.update(chunk)
            if i == 0:
                sshd.kill_connections()
        assert h.hexdigest() == hashlib.sha256(expected).hexdigest()
        assert t.stats.retries >= 1


def test_missing_file_is_not_found(sshd, files):
    with (
        create("ssh", session=None, options=options(sshd)) as t,
        pytest.raises(errors.NotFoundError, match="nope.vmdk not found"),
    ):
        t.open(file=DatastorePath(DS, f"{DIR}/nope.vmdk"))


def test_paths_cannot_leave_the_datastore(sshd, files):
    with create("ssh", session=None, options=options(sshd)) as t:
        with pytest.raises(errors.TransportError, match="leaves the datastore"):
            t.open(file=DatastorePath(DS, "../../etc/passwd"))
        with pytest.raises(errors.TransportError, match="not usable"):
            t.open(file=DatastorePath("..", "etc/passwd"))


def test_unknown_host_key_is_refused_with_its_fingerprint(sshd, files, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with (
        create("ssh", session=None, options=options(sshd, known_hosts=str(empty))) as t,
        pytest.raises(errors.ConnectionFailure) as info,
    ):
        t.open(file=DISK)
    assert sshd.host_key_fingerprint in str(info.value)
    assert "unknown" in str(info.value) and "--ssh-fingerprint" in str(info.value)
    assert info.value.exit_code == errors.CONNECTION


def test_accept_new_records_the_key(sshd, files, tmp_path):
    known = tmp_path / "sub" / "known_hosts"
    with create(
        "ssh", session=None, options=options(sshd, known_hosts=str(known), accept_new=True)
    ) as t:
        assert t.open(file=DISK).size == len(files["disk-flat.vmdk"])
    assert f"[{sshd.host}]:{sshd.port} " in known.read_text()
    # recorded: later runs need no flag
    with create("ssh", session=None, options=options(sshd, known_hosts=str(known))) as t:
        assert t.open(file=DISK).pread(0, 4) == files["disk-flat.vmdk"][:4]


def test_pinned_fingerprint(sshd, files, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    pinned = options(sshd, known_hosts=str(empty), fingerprint=sshd.host_key_fingerprint)
    with create("ssh", session=None, options=pinned) as t:
        assert t.open(file=DISK).pread(0, 4) == files["disk-flat.vmdk"][:4]
    wrong = options(sshd, known_hosts=str(empty), fingerprint="SHA256:" + "A" * 43)
    with (
        create("ssh", session=None, options=wrong) as t,
        pytest.raises(errors.ConnectionFailure, match="not the pinned SHA256:AAAA"),
    ):
        t.open(file=DISK)
    assert empty.read_text() == ""


def test_changed_host_key_is_refused(sshd, files, tmp_path):
    import paramiko

    # The host is known, but with a key the server does not have: even accept-new refuses.
    fake = paramiko.ECDSAKey.generate()
    known = tmp_path / "known_hosts"
    known.write_text(f"[{sshd.host}]:{sshd.port} {fake.get_name()} {fake.get_base64()}\n")
    with (
        create(
            "ssh",
            session=None,
            options=options(sshd, known_hosts=str(known), accept_new=True),
        ) as t,
        pytest.raises(errors.ConnectionFailure, match="refusing"),
    ):
        t.open(file=DISK)


def test_wrong_client_key_is_auth_error(sshd, files, tmp_path):
    import paramiko

    key = paramiko.ECDSAKey.generate()
    path = tmp_path / "id_ecdsa"
    key.write_private_key_file(str(path))
    with (
        create("ssh", session=None, options=options(sshd, key=str(path))) as t,
        pytest.raises(errors.AuthError, match="SSH login as .* refused"),
    ):
        t.open(file=DISK)


@pytest.mark.parametrize("ssh_reader", ["auto", "dd"])
def test_sizes_come_from_one_listing_and_small_reads_from_one_command(sshd, files, ssh_reader):
    """A remote command costs ~140 ms: opening a VM's files lists their directory once (with
    the host's Python, the listing also brings the small files' contents), and the small
    reads of a VMDK's metadata are served from one read-ahead window."""
    expected = files["disk-flat.vmdk"]
    with create("ssh", session=None, options=options(sshd, reader=ssh_reader)) as t:
        opened = {name: t.open(file=DatastorePath(DS, f"{DIR}/{name}")) for name in files}
        assert {name: f.size for name, f in opened.items()} == {n: len(d) for n, d in files.items()}
        assert t.stats.requests == 1
        disk = opened["disk-flat.vmdk"]
        for offset, length in [(0, 512), (512, 4096), (65536, 2048), (MiB - 100, 100), (7, 3)]:
            assert disk.pread(offset, length) == expected[offset : offset + length]
        assert t.stats.requests == 2  # the listing, the disk's window
        assert b"".join(opened["vm.vmx"].stream(0, opened["vm.vmx"].size)) == files["vm.vmx"]
        vmx_cost = 0 if ssh_reader == "auto" else 1  # dd: the listing is stat's, sizes only
        assert t.stats.requests == 2 + vmx_cost
        assert disk.pread(MiB, 10) == expected[MiB : MiB + 10]  # past the window: fetched
        assert t.stats.requests == 3 + vmx_cost
        missing = DatastorePath(DS, f"{DIR}/not-there.vmdk")
        with pytest.raises(errors.NotFoundError):
            t.open(file=missing)
