"""What SSH mode runs on the host, run here as local processes (the same ``sh`` and Python an
sshd would start), and the decoders of what they print."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest
from paramiko.buffered_pipe import PipeTimeout

from vcbproxy.transport import sshstream
from vcbproxy.transport.sshstream import FastPipe, Incoming, StreamEnded

MiB = 1 << 20


class _Pipe:
    """A local command's stdout, read the way a channel is."""

    def __init__(self, command: str):
        self.proc = subprocess.Popen(["sh", "-c", command], stdout=subprocess.PIPE)

    def recv(self, n: int) -> bytes:
        return self.proc.stdout.read1(min(n, 256 << 10))

    def close(self) -> int:
        self.proc.stdout.close()
        return self.proc.wait()


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """Data, zeros written out, a hole, data not aligned to the 64 KiB blocks."""
    path = tmp_path_factory.mktemp("sshstream") / "disk-flat.vmdk"
    with open(path, "wb") as f:
        f.write(os.urandom(MiB + 100))
        f.write(bytes(3 * MiB))
        f.seek(9 * MiB)
        f.write(os.urandom(200_000))
        f.write(bytes(65536 * 2 + 17))
    return path


@pytest.mark.parametrize("reader", sshstream.READERS)
@pytest.mark.parametrize(
    "plan",
    [
        (0, None, None, None),  # the whole file, one range
        (4321, 6 * MiB, None, None),  # one range, odd start
        (100, None, 700_000, 2_100_000),  # a stripe: every third 700 KB segment
    ],
)
def test_every_reader_prints_the_planned_ranges(disk, reader, plan):
    data = disk.read_bytes()
    first, end, size, stride = plan
    end = len(data) if end is None else end
    size = size or end - first
    stride = stride or size
    expected = b"".join(data[o : min(o + size, end)] for o in range(first, end, stride))
    pipe = _Pipe(sshstream.reader_command(reader, str(disk), first, end, size, stride))
    decode = sshstream.record_chunks if reader == "python" else sshstream.raw_chunks
    incoming = Incoming(pipe)
    chunks = list(decode(incoming, len(expected), 300_000))
    assert pipe.close() == 0
    assert b"".join(chunks) == expected
    assert max(map(len, chunks)) <= 300_000
    if reader == "python" and plan[0] == 0:
        # the 3 MiB of written zeros and the hole came as records, not bytes
        assert incoming.received < len(expected) - 4 * MiB


@pytest.mark.parametrize("reader", sshstream.READERS)
def test_shell_words_in_a_file_name_stay_part_of_the_name(tmp_path, reader):
    """A name holding what the command's own shell loop uses ($o, $n, $((o + 1)))."""
    data = os.urandom(3000)
    path = tmp_path / "a$n$o $((o + 1)) 'q' $(x)-flat.vmdk"
    path.write_bytes(data)
    (tmp_path / "a1000-flat.vmdk").write_bytes(b"wrong file" * 300)
    for plan in ((10, 2010, 2000, 2000), (0, 3000, 1000, 1500)):
        first, end, size, stride = plan
        expected = b"".join(data[o : min(o + size, end)] for o in range(first, end, stride))
        pipe = _Pipe(sshstream.reader_command(reader, str(path), *plan))
        decode = sshstream.record_chunks if reader == "python" else sshstream.raw_chunks
        assert b"".join(decode(Incoming(pipe), len(expected), 4096)) == expected
        assert pipe.close() == 0


def test_the_python_reader_exits_4_naming_a_file_it_cannot_read(tmp_path):
    proc = subprocess.run(
        [
            "sh",
            "-c",
            sshstream.reader_command("python", str(tmp_path / "missing-flat.vmdk"), 0, 10, 10, 10),
        ],
        capture_output=True,
    )
    assert proc.returncode == sshstream.READER_FILE_ERROR
    assert b"missing-flat.vmdk: No such file" in proc.stderr and proc.stdout == b""


def test_the_python_reader_exits_3_when_the_file_is_shorter_than_planned(disk):
    size = disk.stat().st_size
    pipe = _Pipe(
        sshstream.reader_command("python", str(disk), 0, size + MiB, size + MiB, size + MiB)
    )
    with pytest.raises(StreamEnded):
        list(sshstream.record_chunks(Incoming(pipe), size + MiB, MiB))
    assert pipe.close() == sshstream.READER_SHORT_FILE


def test_a_garbled_record_is_a_stream_error_not_a_crash():
    pipe = _Pipe("printf '\\007\\000\\000\\000\\001x'")
    with pytest.raises(StreamEnded, match="garbled"):
        list(sshstream.record_chunks(Incoming(pipe), 10, 10))
    pipe.close()


@pytest.mark.parametrize("python", [True, False])
def test_listing_gives_sizes_and_with_python_small_contents(tmp_path, python):
    names = {
        "vm.vmx": b'displayName = "x"\n',
        "a b\nc.log": b"line\n",
        "empty.log": b"",
        "big-flat.vmdk": os.urandom(300_000),
        "caf\xe9.nvram": b"\x00\x01",
    }
    for name, content in names.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "subdir").mkdir()
    command = sshstream.listing_command(str(tmp_path), 256 << 10, 8 << 20, python=python)
    out = subprocess.run(["sh", "-c", command], capture_output=True, check=False).stdout
    sizes, contents = sshstream.parse_listing(out, str(tmp_path))
    wanted = {f"{tmp_path}/{n}": len(c) for n, c in names.items()}
    if not python:
        # stat prints one line per file: a name with a newline cannot be told apart
        wanted.pop(f"{tmp_path}/a b\nc.log")
    assert sizes == wanted
    if python:
        assert contents == {f"{tmp_path}/{n}": c for n, c in names.items() if n != "big-flat.vmdk"}
    else:
        assert contents == {}


def test_an_incomplete_listing_is_refused_whole(tmp_path):
    (tmp_path / "vm.vmx").write_bytes(b"x" * 100)
    command = sshstream.listing_command(str(tmp_path), 1000, 2500, python=True)
    out = subprocess.run(["sh", "-c", command], capture_output=True, check=True).stdout
    assert sshstream.parse_listing(out, str(tmp_path))[1]
    for cut in (len(out) - 1, len(out) - len(sshstream.LISTING_END) - 50, 25):
        with pytest.raises(ValueError):
            sshstream.parse_listing(out[:cut], str(tmp_path))


def test_listing_stops_sending_contents_past_its_budget(tmp_path):
    for i in range(4):
        (tmp_path / f"f{i}.log").write_bytes(bytes([i]) * 1000)
    command = sshstream.listing_command(str(tmp_path), 1000, 2500, python=True)
    out = subprocess.run(["sh", "-c", command], capture_output=True, check=True).stdout
    sizes, contents = sshstream.parse_listing(out, str(tmp_path))
    assert len(sizes) == 4 and len(contents) == 2
    assert all(contents[p] == bytes([int(p[-5])]) * 1000 for p in contents)


def test_fast_pipe_hands_packets_on_and_splits_only_when_asked():
    pipe = FastPipe()
    first, second = b"a" * 10, b"b" * 10
    pipe.feed(first)
    pipe.feed(second)
    assert len(pipe) == 20 and pipe.read_ready()
    assert pipe.read(100) is first  # the packet itself, no copy
    assert pipe.read(4) == b"bbbb" and len(pipe) == 6
    assert pipe.read(100) == b"bbbbbb" and not pipe.read_ready()
    with pytest.raises(PipeTimeout):
        pipe.read(10, timeout=0.05)
    threading.Timer(0.05, pipe.close).start()
    assert pipe.read(10) == b""  # closed while waiting: end of stream


def test_the_python_reader_sends_a_file_of_holes_as_a_few_records(tmp_path):
    path = tmp_path / "empty-flat.vmdk"
    with open(path, "wb") as f:
        f.truncate(3 << 30)  # 3 GiB, all hole: more than one record can say
    size = path.stat().st_size
    pipe = _Pipe(sshstream.reader_command("python", str(path), 0, size, size, size))
    incoming = Incoming(pipe)
    total = sum(len(c) for c in sshstream.record_chunks(incoming, size, 64 << 20))
    assert pipe.close() == 0
    assert total == size and incoming.received < 100
