"""qemu-img as the independent oracle: it reads every VMDK we write, we read what it writes."""

import os
import random
import subprocess

import pytest

from vcbproxy.vmdk.chain import DiskChain
from vcbproxy.vmdk.io import local_opener
from vcbproxy.vmdk.sparse import SparseExtent
from vcbproxy.vmdk.stream import iter_stream_optimized
from vcbproxy.vmdk.writers import FORMATS, open_writer

pytestmark = pytest.mark.usefixtures("qemu_img")

MIB = 1 << 20
GIB = 1 << 30
GRAIN = 64 * 1024


def qemu(*args):
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"qemu-img {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def random_image(path, cap, seed):
    """A raw image with data, zero stretches and holes; returns its writes in order."""
    rng = random.Random(seed)
    writes, pos = [], 0
    with open(path, "wb") as f:
        f.truncate(cap)
        while True:
            pos += rng.choice([0, 512, GRAIN, 5 * GRAIN + 3 * 512, MIB])
            n = rng.choice([512, 4096, 100_000, GRAIN])
            if pos + n > cap:
                break
            data = bytes(n) if rng.random() < 0.15 else rng.randbytes(n)
            f.seek(pos)
            f.write(data)
            writes.append((pos, data))
            pos += n
    return writes


def read_chain(directory, name):
    handles = []

    def opener(n):
        handles.append(local_opener(directory)(n))
        return handles[-1]

    try:
        chain = DiskChain.open(name, opener)
        return chain.read(0, chain.capacity)
    finally:
        for h in handles:
            h.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_qemu_reads_what_we_write(tmp_path, fmt):
    cap = 6 * MIB + 512 * 9
    raw = tmp_path / "src.raw"
    writes = random_image(raw, cap, seed=hash(fmt) & 0xFFFF)
    out = tmp_path / "out"
    out.mkdir()
    w = open_writer(fmt, out, "disk", cap)
    for off, data in writes:
        w.write(off, data)
    files = w.close()
    top = out / files[0]
    qemu("check", str(top))
    assert "Images are identical" in qemu("compare", "-f", "vmdk", "-F", "raw", str(top), str(raw))
    qemu("convert", "-O", "raw", str(top), str(tmp_path / "back.raw"))
    assert (tmp_path / "back.raw").read_bytes() == raw.read_bytes()
    info = qemu("info", str(top))
    expected_type = {
        "2gbsparse": "twoGbMaxExtentSparse",
        "monolithic": "monolithicSparse",
        "flat": "monolithicFlat",
        "stream": "streamOptimized",
    }[fmt]
    assert f"create type: {expected_type}" in info


def test_split_sparse_beyond_2gib(tmp_path):
    cap = 5 * GIB + 3 * MIB
    marks = [
        (0, b"start"),
        (2047 * MIB - 3, b"across"),
        (4 * GIB + 17, b"middle"),
        (cap - 6, b"finish"),
    ]
    w = open_writer("2gbsparse", tmp_path, "big", cap)
    for off, data in marks:
        w.write(off, data)
    files = w.close()
    assert files == ["big.vmdk", "big-s001.vmdk", "big-s002.vmdk", "big-s003.vmdk"]
    qemu("check", str(tmp_path / "big.vmdk"))
    # qemu reads each mark where we put it, including the one straddling two extents
    for off, data in marks:
        got = qemu_read(tmp_path / "big.vmdk", off, len(data))
        assert got == data, off


def qemu_read(image, offset, length):
    """Read a byte range through qemu's own block layer (``qemu-io read -v`` hex dump)."""
    out = subprocess.run(
        ["qemu-io", "-f", "vmdk", "-r", "-c", f"read -v {offset} {length}", str(image)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data = bytearray()
    for line in out.stdout.splitlines():
        head, sep, rest = line.partition(":  ")
        if sep and all(c in "0123456789abcdef" for c in head):
            data += bytes.fromhex(rest.split("  ")[0])
    return bytes(data)


@pytest.mark.parametrize(
    "subformat, files",
    [
        ("monolithicSparse", ["q.vmdk"]),
        ("twoGbMaxExtentSparse", ["q.vmdk", "q-s001.vmdk"]),
        ("monolithicFlat", ["q.vmdk", "q-flat.vmdk"]),
    ],
)
def test_we_read_what_qemu_writes(tmp_path, subformat, files):
    cap = 5 * MIB
    raw = tmp_path / "src.raw"
    random_image(raw, cap, seed=len(subformat))
    qemu(
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        f"subformat={subformat}",
        str(raw),
        str(tmp_path / "q.vmdk"),
    )
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("q")) == sorted(files)
    assert read_chain(tmp_path, "q.vmdk") == raw.read_bytes()


def test_we_read_qemu_stream_optimized(tmp_path):
    cap = 7 * MIB
    raw = tmp_path / "src.raw"
    random_image(raw, cap, seed=42)
    qemu(
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        str(raw),
        str(tmp_path / "s.vmdk"),
    )
    with open(tmp_path / "s.vmdk", "rb") as f:
        capacity, grains = iter_stream_optimized(f)
        image = bytearray(capacity)
        for off, data in grains:
            image[off : off + len(data)] = data
    assert capacity == cap and bytes(image) == raw.read_bytes()


def test_qemu_snapshot_chain(tmp_path):
    """A qemu delta (monolithicSparse with parentFileNameHint) over our flat base."""
    cap = 4 * MIB
    base = os.urandom(cap)
    w = open_writer("flat", tmp_path, "base", cap)
    w.write(0, base)
    w.close()
    qemu("create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", str(tmp_path / "delta.vmdk"))
    subprocess.run(
        ["qemu-io", "-c", f"write -P 0x5a {MIB + 512} 1000", str(tmp_path / "delta.vmdk")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    expected = bytearray(base)
    expected[MIB + 512 : MIB + 1512] = b"\x5a" * 1000
    handles = []

    def opener(n):
        handles.append(local_opener(tmp_path)(n))
        return handles[-1]

    chain = DiskChain.open("delta.vmdk", opener)
    assert len(chain.layers) == 2
    assert chain.read(0, cap) == bytes(expected)
    qemu("convert", "-O", "raw", str(tmp_path / "delta.vmdk"), str(tmp_path / "d.raw"))
    assert (tmp_path / "d.raw").read_bytes() == bytes(expected)
    for h in handles:
        h.close()


def test_delta_we_write_is_read_by_qemu_over_its_parent(tmp_path):
    """Explicit zeros in our delta (force=True) must hide the parent's data in qemu too."""
    from vcbproxy.vmdk.descriptor import Extent, new_descriptor, render

    cap = 2 * MIB
    base = b"\xee" * cap
    w = open_writer("flat", tmp_path, "p", cap)
    w.write(0, base)
    w.close()
    d = new_descriptor(
        "monolithicSparse",
        [Extent("RW", cap // 512, "SPARSE", "c.vmdk")],
        capacity=cap,
        parent_hint="p.vmdk",
        parent_cid=_cid(tmp_path / "p.vmdk"),
    )
    with SparseExtent.create(tmp_path / "c.vmdk", cap, descriptor=render(d)) as ext:
        ext.write(GRAIN, bytes(GRAIN), force=True)
        ext.write(3 * GRAIN, b"\x11" * GRAIN)
    qemu("check", str(tmp_path / "c.vmdk"))
    qemu("convert", "-O", "raw", str(tmp_path / "c.vmdk"), str(tmp_path / "c.raw"))
    expected = bytearray(base)
    expected[GRAIN : 2 * GRAIN] = bytes(GRAIN)
    expected[3 * GRAIN : 4 * GRAIN] = b"\x11" * GRAIN
    assert (tmp_path / "c.raw").read_bytes() == bytes(expected)
    assert read_chain(tmp_path, "c.vmdk") == bytes(expected)


def _cid(path):
    from vcbproxy.vmdk.descriptor import parse

    return parse(path.read_text()).cid
