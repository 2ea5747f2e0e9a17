"""The lab's disk engine: real VMDK files that qemu-img reads, and an oracle that agrees with them.

qemu-img is the independent reader: whatever the chain of files holds must equal the oracle's
export at the matching journal mark, before and after every kind of snapshot merge.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from pathlib import Path

import pytest

from vcblab import content
from vcblab.disks import BLOCK, LabDisk
from vcbproxy.vmdk import descriptor
from vcbproxy.vmdk.chain import DiskChain
from vcbproxy.vmdk.io import local_opener

MIB = 1 << 20
CAP = 8 * MIB

pytestmark = pytest.mark.usefixtures("qemu_img")


def qemu_raw(image: Path, out: Path) -> bytes:
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(image), str(out)], check=True, capture_output=True
    )
    return out.read_bytes()


def oracle_raw(disk: LabDisk, out: Path, mark=None) -> bytes:
    disk.export_raw(out, mark)
    return out.read_bytes()


def assert_chain_matches(disk: LabDisk, tmp: Path, mark=None, layer: str | None = None):
    got = qemu_raw(disk.directory / (layer or disk.top), tmp / "qemu.raw")
    want = oracle_raw(disk, tmp / "oracle.raw", mark)
    assert got == want
    assert hashlib.sha256(want).hexdigest() == disk.sha256(mark)
    chain = DiskChain.open(layer or disk.top, local_opener(disk.directory))  # our own reader
    assert chain.layer_names == disk.layers[: disk.layers.index(layer or disk.top) + 1]
    assert chain.read(0, disk.capacity) == want
    check = subprocess.run(
        ["qemu-img", "check", str(disk.directory / disk.top)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture
def ds(tmp_path) -> Path:
    d = tmp_path / "ds"
    d.mkdir()
    return d


# -- content ------------------------------------------------------------------------------


def test_base_extents_are_aligned_sorted_and_near_the_fill():
    ext = content.base_extents(64 * MIB, seed=5, fill=0.4)
    assert ext == content.base_extents(64 * MIB, seed=5, fill=0.4)
    assert ext != content.base_extents(64 * MIB, seed=6, fill=0.4)
    assert ext[0][0] == 0
    for (a, n), (b, _) in zip(ext, ext[1:], strict=False):
        assert a % BLOCK == 0 and n % BLOCK == 0 and a + n < b  # separated by zeros
    assert 0.25 < sum(n for _, n in ext) / (64 * MIB) < 0.55
    assert content.base_extents(3 * BLOCK + 512, seed=1, fill=1.0) == [(0, 3 * BLOCK + 512)]
    assert content.base_extents(CAP, seed=1, fill=0.0) == []


def test_fill_bytes_regenerates_any_range_independently():
    whole = content.fill_bytes(9, 0, 3 * MIB)
    assert content.fill_bytes(9, MIB - 10, 20) == whole[MIB - 10 : MIB + 10]
    assert content.fill_bytes(9, 2 * MIB + 7, 100) == whole[2 * MIB + 7 : 2 * MIB + 107]
    assert content.fill_bytes(10, 0, 100) != whole[:100]


# -- base disk ----------------------------------------------------------------------------


def test_create_writes_a_vmfs_descriptor_and_a_sparse_flat_extent(ds, tmp_path):
    disk = LabDisk.create(ds, "web01", CAP, seed=3, uuid="6000c298-1111-2222-3333-444455556666")
    desc = descriptor.parse((ds / "web01.vmdk").read_text())
    assert desc.create_type == "vmfs" and desc.capacity == CAP
    assert [(e.type, e.filename) for e in desc.extents] == [("FLAT", "web01-flat.vmdk")]
    flat = ds / "web01-flat.vmdk"
    assert flat.stat().st_size == CAP
    assert flat.stat().st_blocks * 512 < CAP * 0.8  # holes where the disk holds zeros
    assert disk.layers == ["web01.vmdk"] and disk.top == "web01.vmdk"
    assert disk.file_kinds() == [
        ("web01.vmdk", "diskDescriptor"),
        ("web01-flat.vmdk", "diskExtent"),
    ]
    assert disk.uuid == "6000c298-1111-2222-3333-444455556666"
    assert disk.allocated() == content.base_extents(CAP, 3)
    assert_chain_matches(disk, tmp_path)


# -- snapshots and merges -----------------------------------------------------------------


def build_chain(ds: Path) -> tuple[LabDisk, list[int]]:
    """base + writes, delta 1 + writes, delta 2 + writes; marks at each snapshot and now."""
    disk = LabDisk.create(ds, "vm", CAP, seed=11)
    marks = [disk.mark()]
    disk.guest_write(100, b"A" * 1000)  # unaligned, into the flat base
    disk.churn(10, seed=1)
    marks.append(disk.mark())
    disk.add_delta()
    disk.guest_write(5 * BLOCK + 77, b"B" * 3 * BLOCK)  # spans grains, partial at both ends
    disk.guest_write(0, bytes(BLOCK))  # explicit zeros must hide base data
    disk.churn(10, seed=2)
    marks.append(disk.mark())
    disk.add_delta()
    disk.guest_write(CAP - 10, b"C" * 10)  # last bytes of the disk
    disk.churn(10, seed=3)
    marks.append(disk.mark())
    return disk, marks


def test_every_layer_of_the_chain_reads_as_the_oracle_at_its_snapshot(ds, tmp_path):
    disk, marks = build_chain(ds)
    assert disk.layers == ["vm.vmdk", "vm-000001.vmdk", "vm-000002.vmdk"]
    info = subprocess.run(
        ["qemu-img", "info", "--backing-chain", str(ds / disk.top)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "backing file: vm-000001.vmdk" in info and "backing file: vm.vmdk" in info
    for layer, mark in zip(disk.layers, marks[1:], strict=True):
        assert_chain_matches(disk, tmp_path, mark, layer=layer)
    assert disk.read(0, BLOCK) == bytes(BLOCK)
    assert disk.read(0, BLOCK, marks[1]) != bytes(BLOCK)
    assert disk.read(CAP - 10, 10) == b"C" * 10
    delta = descriptor.parse((ds / "vm-000002.vmdk").read_text())
    parent = descriptor.parse((ds / "vm-000001.vmdk").read_text())
    assert delta.parent_hint == "vm-000001.vmdk" and delta.parent_cid == parent.cid
    assert parent.create_type == "seSparse"  # what LabDisk makes unless told the datastore's


@pytest.mark.parametrize("order", [[1, 1], [2, 1], [1], [2]])
def test_merging_layers_in_any_position_keeps_content_and_the_oracle(ds, tmp_path, order):
    disk, marks = build_chain(ds)
    before = [disk.sha256(m) for m in marks]
    for index in order:
        gone = disk.layers[index]
        disk.remove_layer(index)
        assert not (ds / gone).exists()
        assert gone not in disk.files()
        assert_chain_matches(disk, tmp_path)
    assert [disk.sha256(m) for m in marks] == before  # the journal survives merges
    # the guest keeps writing into whatever is top now, and the files still agree
    disk.guest_write(3 * BLOCK + 5, b"after merge")
    disk.churn(5, seed=9)
    assert_chain_matches(disk, tmp_path)
    if len(disk.layers) > 1:
        desc = descriptor.parse((ds / disk.layers[1]).read_text())
        base = descriptor.parse((ds / disk.layers[0]).read_text())
        assert desc.parent_hint == disk.layers[0] and desc.parent_cid == base.cid


def test_the_base_layer_cannot_be_merged(ds):
    disk = LabDisk.create(ds, "vm", CAP, seed=1)
    with pytest.raises(ValueError, match="no parent"):
        disk.remove_layer(0)
    disk.add_delta()
    with pytest.raises(ValueError):
        disk.remove_layer(2)


def test_delta_names_are_not_reused_after_a_merge(ds):
    disk = LabDisk.create(ds, "vm", CAP, seed=1)
    disk.add_delta()
    disk.remove_layer(1)
    assert disk.add_delta() == "vm-000002.vmdk"


# -- guest writes -------------------------------------------------------------------------


def test_churn_writes_about_the_asked_share_and_is_journaled(ds):
    disk = LabDisk.create(ds, "vm", CAP, seed=1)
    m0 = disk.mark()
    written = disk.churn(25, seed=4)
    assert written == round(CAP // BLOCK * 0.25) * BLOCK
    assert disk.mark() - m0 == written // BLOCK
    assert disk.sha256() != disk.sha256(m0)
    assert (ds / "vm.labjournal").stat().st_size > 0
    with pytest.raises(ValueError):
        disk.guest_write(CAP - 1, b"xx")
    with pytest.raises(ValueError):
        disk.read(0, 10, mark=disk.mark() + 1)


def test_reads_while_a_churn_thread_writes_stay_consistent(ds, tmp_path):
    disk = LabDisk.create(ds, "vm", CAP, seed=1)
    disk.add_delta()
    errors = []

    def writer():
        try:
            for i in range(5):
                disk.churn(5, seed=i)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    marks = []
    while t.is_alive():
        m = disk.mark()
        marks.append((m, disk.read(0, CAP, m)))
        t.join(0.05)
    t.join()
    assert not errors
    for m, data in marks[:: max(1, len(marks) // 5)]:
        assert hashlib.sha256(data).hexdigest() == disk.sha256(m)
    assert_chain_matches(disk, tmp_path)


# -- persistence --------------------------------------------------------------------------


def test_state_reloads_the_disk_with_its_journal_and_tracking(ds, tmp_path):
    disk, marks = build_chain(ds)
    disk.cbt.enable()
    disk.churn(5, seed=7)
    state = disk.state()
    sums = [disk.sha256(m) for m in marks] + [disk.sha256()]
    cid = disk.change_id
    disk.close()
    import json

    again = LabDisk.load(ds, state["layers"][-1], json.loads(json.dumps(state)))
    assert again.layers == disk.layers and again.capacity == CAP and again.uuid == disk.uuid
    assert [again.sha256(m) for m in marks] + [again.sha256()] == sums
    assert again.change_id == cid
    again.guest_write(BLOCK, b"later")
    assert again.add_delta() == "vm-000003.vmdk"
    assert_chain_matches(again, tmp_path)


def test_an_uploaded_disk_is_adopted_with_whatever_its_files_hold(ds, tmp_path):
    raw = tmp_path / "src.raw"
    data = bytearray(CAP)
    data[BLOCK : BLOCK + 5000] = b"u" * 5000
    data[CAP - 512 :] = b"z" * 512
    raw.write_bytes(data)
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(ds / "up.vmdk")],
        check=True,
    )  # a monolithicSparse base
    disk = LabDisk.load(ds, "up.vmdk", None)
    assert disk.capacity == CAP and disk.layers == ["up.vmdk"]
    assert disk.read(0, CAP) == bytes(data)
    assert disk.allocated() == [(BLOCK, BLOCK), (CAP - BLOCK, BLOCK)]
    m0 = disk.mark()
    disk.guest_write(10, b"guest")
    disk.add_delta()
    disk.guest_write(BLOCK + 1, b"delta")
    assert_chain_matches(disk, tmp_path)
    assert disk.read(0, CAP, m0) == bytes(data)
    disk.remove_layer(1)
    assert_chain_matches(disk, tmp_path)
    reloaded = LabDisk.load(ds, disk.top, disk.state())
    assert reloaded.read(0, CAP, m0) == bytes(data)
    # a chain uploaded whole: the delta's parent hint leads back to the base
    disk.add_delta()
    disk.guest_write(7, b"x")
    top = disk.top
    disk.close()
    for name in ("up.labjournal", "up.labbase"):
        (ds / name).unlink()
    chain = LabDisk.load(ds, top, None)
    assert chain.layers == ["up.vmdk", top]
    assert chain.read(0, 8) == b"\0" * 7 + b"x"


def test_a_disk_that_cannot_be_adopted_leaves_no_file_open(ds, monkeypatch):
    LabDisk.create(ds, "bad", CAP, seed=5).close()

    def copy_fails(self):
        raise OSError("no space left for the base copy")

    monkeypatch.setattr(LabDisk, "_snapshot_base", copy_fails)
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="no space"):
        LabDisk.load(ds, "bad.vmdk", None)
    assert sorted(os.listdir("/proc/self/fd")) == before  # the journal was closed again


def test_snapshot_is_one_step_even_while_the_guest_writes(ds, tmp_path):
    disk = LabDisk.create(ds, "vm", CAP, seed=1)
    disk.cbt.enable()
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            disk.churn(1, seed=i)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        mark, change_id, frozen, delta = disk.snapshot()
    finally:
        stop.set()
        t.join()
    assert frozen == 0 and delta == disk.top == "vm-000001.vmdk"
    assert change_id.endswith("/0") and disk.cbt.mark_of(change_id) == mark
    assert_chain_matches(disk, tmp_path, mark, layer=disk.layers[frozen])
    assert_chain_matches(disk, tmp_path)
