"""SSH transport with parallel channels against a real OpenSSH sshd: striped reads are exact on
every remote reader (python records, GNU dd, busybox tail|head), survive connections killed mid-transfer,
and a reader that stops early leaves the transport usable."""

from __future__ import annotations

import hashlib
import os

import pytest

from vcbproxy.models import DatastorePath
from vcbproxy.transport import ModeOptions, create, sshstream
from vcbproxy.transport import ssh as ssh_module

MIB = 1 << 20
DATASTORE = "parallel-ds"
DIRECTORY = "vm 'x' $(y)"  # quoting: a name a shell would misread
DISK = DatastorePath(DATASTORE, f"{DIRECTORY}/disk-flat.vmdk")


def options(sshd, **extra) -> ModeOptions:
    return sshd.options(**{"channels": 3, **extra})


@pytest.fixture(scope="module")
def blob(sshd):
    root = sshd.volumes_root / DATASTORE / DIRECTORY
    root.mkdir(parents=True, exist_ok=True)
    data = os.urandom(40 * MIB + 4321)  # not a whole number of segments
    (root / "disk-flat.vmdk").write_bytes(data)
    return data


@pytest.fixture
def small_segments(monkeypatch):
    # Small segments so a 40 MiB file spans many stripes on every channel.
    monkeypatch.setattr(ssh_module, "SEGMENT", 2 * MIB)
    monkeypatch.setattr(ssh_module, "PARALLEL_MIN", 4 * MIB)


@pytest.mark.parametrize("reader", sshstream.READERS)
def test_parallel_channels_read_exactly(sshd, blob, small_segments, reader):
    with create("ssh", session=None, options=options(sshd)) as t:
        t._readers = list(sshstream.READERS[sshstream.READERS.index(reader) :])
        f = t.open(file=DISK)
        digest = hashlib.sha256()
        for chunk in f.stream(777, f.size - 777, chunk=300000):
            digest.update(chunk)
        assert digest.hexdigest() == hashlib.sha256(blob[777:]).hexdigest()
        assert t.reader == reader


def test_connections_killed_mid_transfer_are_resumed(sshd, blob, small_segments):
    with create("ssh", session=None, options=options(sshd)) as t:
        f = t.open(file=DISK)
        digest = hashlib.sha256()
        for i, chunk in enumerate(f.stream(0, f.size)):
            digest.update(chunk)
            if i == 5:
                assert sshd.kill_connections() > 0
        assert digest.hexdigest() == hashlib.sha256(blob).hexdigest()
        assert t.stats.retries >= 1


def test_a_reader_that_stops_early_leaves_the_transport_usable(sshd, blob, small_segments):
    with create("ssh", session=None, options=options(sshd)) as t:
        f = t.open(file=DISK)
        stream = f.stream(0, f.size)
        next(stream)
        next(stream)
        stream.close()
        assert b"".join(f.stream(5 * MIB, 10 * MIB)) == blob[5 * MIB : 15 * MIB]
