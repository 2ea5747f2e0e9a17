"""Lab changed block tracking: change IDs, exact changed areas, "*", paging, reset, persistence."""

from __future__ import annotations

import random
import re

import pytest

from vcblab.cbt import BLOCK, ChangeTracker, InvalidChangeId
from vcblab.disks import LabDisk

MIB = 1 << 20
CAP = 8 * MIB


def blocks_of(areas):
    return {b for off, n in areas for b in range(off // BLOCK, -(-(off + n) // BLOCK))}


def write_randomly(disk: LabDisk, rng: random.Random, count: int) -> set[int]:
    """Unaligned guest writes; returns the 64 KiB blocks they touched."""
    touched = set()
    for _ in range(count):
        n = rng.randint(1, 3 * BLOCK)
        off = rng.randrange(0, CAP - n)
        disk.guest_write(off, rng.randbytes(n))
        touched.update(range(off // BLOCK, (off + n - 1) // BLOCK + 1))
    return touched


@pytest.fixture
def disk(tmp_path) -> LabDisk:
    d = LabDisk.create(tmp_path, "vm", CAP, seed=2)
    d.cbt.enable()
    return d


def test_change_ids_look_like_vsphere_ones_and_advance(disk):
    first = disk.change_id
    assert re.fullmatch(r"52( [0-9a-f]{2}){7}-[0-9a-f]{2}( [0-9a-f]{2}){7}/0", first)
    assert disk.cbt.advance() == first
    assert disk.change_id.endswith("/1") and disk.change_id.startswith(first[:-2])
    assert disk.cbt.path.name == "vm-ctk.vmdk" and ("vm-ctk.vmdk", "ctk") in disk.file_kinds()


def test_areas_cover_exactly_the_blocks_written_between_two_snapshots(disk):
    rng = random.Random(1)
    write_randomly(disk, rng, 10)
    disk.add_delta()
    c1 = disk.cbt.advance()
    touched = write_randomly(disk, rng, 25)
    disk.add_delta()
    c2 = disk.cbt.advance()
    later = write_randomly(disk, rng, 5)  # after the second snapshot: not between them
    areas, covered = disk.query_changed(c1, c2, 0, None)
    assert covered == CAP
    assert blocks_of(areas) == touched
    assert all(off % BLOCK == 0 and n % BLOCK == 0 for off, n in areas)
    assert all(a + n < b for (a, n), (b, _) in zip(areas, areas[1:], strict=False))  # merged
    # the running state: everything since c1
    areas_now, _ = disk.query_changed(c1, disk.change_id, 0, None)
    assert blocks_of(areas_now) == touched | later
    assert disk.query_changed(c2, c2, 0, None)[0] == []


def test_star_is_the_allocated_ranges_of_the_snapshot_state(disk):
    m0 = disk.mark()
    c0 = disk.cbt.advance()
    disk.guest_write(CAP - BLOCK, b"tail")
    areas, covered = disk.query_changed("*", c0, 0, None)
    assert covered == CAP and areas == disk.allocated(m0)
    assert areas != disk.allocated()
    assert disk.query_changed("*", disk.change_id, 0, None)[0] == disk.allocated()


def test_paging_covers_the_whole_disk_and_agrees_with_one_query(disk):
    rng = random.Random(3)
    c0 = disk.cbt.advance()
    write_randomly(disk, rng, 40)
    c1 = disk.cbt.advance()
    for since in (c0, "*"):
        whole, _ = disk.query_changed(since, c1, 0, None)
        start, pages = 0, []
        while start < CAP:
            areas, covered = disk.query_changed(since, c1, start, MIB + 4096)
            assert covered > 0 and all(start <= o and o + n <= start + covered for o, n in areas)
            pages += areas
            start += covered
        assert start == CAP
        assert blocks_of(pages) == blocks_of(whole)
    with pytest.raises(ValueError):
        disk.query_changed(c0, c1, CAP + 1, MIB)


def test_reset_voids_old_change_ids(disk):
    c0 = disk.cbt.advance()
    disk.guest_write(0, b"x")
    disk.cbt.reset()
    with pytest.raises(InvalidChangeId, match="reset"):
        disk.query_changed(c0, disk.change_id, 0, None)
    with pytest.raises(InvalidChangeId):
        disk.query_changed("*", c0, 0, None)
    assert disk.change_id.endswith("/0") and disk.change_id.split("/")[0] != c0.split("/")[0]
    assert disk.query_changed(disk.change_id, disk.change_id, 0, None) == ([], CAP)


@pytest.mark.parametrize("bad", ["", "nonsense", "52 00/x", "/3"])
def test_malformed_future_and_reversed_ids_are_refused(disk, bad):
    c0 = disk.cbt.advance()
    c1 = disk.cbt.advance()
    with pytest.raises(InvalidChangeId):
        disk.query_changed(bad, c1, 0, None)
    future = c1.rsplit("/", 1)[0] + "/9"
    with pytest.raises(InvalidChangeId, match="not reached"):
        disk.query_changed(c0, future, 0, None)
    with pytest.raises(InvalidChangeId, match="newer"):
        disk.query_changed(c1, c0, 0, None)


def test_disabled_tracking_answers_nothing_and_drops_its_file(disk):
    c0 = disk.cbt.advance()
    disk.cbt.disable()
    assert not disk.cbt.path.exists() and disk.change_id is None
    assert all(kind != "ctk" for _, kind in disk.file_kinds())
    disk.guest_write(0, b"untracked")
    with pytest.raises(InvalidChangeId, match="not enabled"):
        disk.query_changed(c0, c0, 0, None)
    disk.cbt.enable()
    with pytest.raises(InvalidChangeId):
        disk.query_changed(c0, disk.change_id, 0, None)


def test_tracking_survives_a_reload_and_a_torn_last_line(tmp_path):
    path = tmp_path / "d-ctk.vmdk"
    marks = iter(range(100))
    t = ChangeTracker(path, mark_source=lambda: next(marks))
    t.enable()
    t.record(0, 10)
    c0 = t.advance()
    t.record(3 * BLOCK - 1, 2)  # straddles blocks 2 and 3
    c1 = t.advance()
    t.record(7 * BLOCK, BLOCK)
    with open(path, "a") as f:
        f.write("R 12")  # a crash mid-append
    again = ChangeTracker(path)
    assert again.change_id == t.change_id
    assert again.changed(c0, c1, 0, None, CAP) == ([(2 * BLOCK, 2 * BLOCK)], CAP)
    assert again.changed(c1, again.change_id, 0, None, CAP)[0] == [(7 * BLOCK, BLOCK)]
    assert again.mark_of(c0) == 0 and again.mark_of(c1) == 1
    assert again.mark_of(again.change_id) is None
    again.record(9 * BLOCK, 1)  # the torn piece was cut off, so appends stay readable
    third = ChangeTracker(path)
    assert third.changed(c1, third.change_id, 0, None, CAP)[0] == [
        (7 * BLOCK, BLOCK),
        (9 * BLOCK, BLOCK),
    ]


def test_a_file_that_is_not_a_ctk_log_is_refused(tmp_path):
    path = tmp_path / "x-ctk.vmdk"
    path.write_text("# Disk DescriptorFile\n")
    with pytest.raises(ValueError, match="not a lab change-tracking file"):
        ChangeTracker(path)
    path.write_text("vcbproxy-lab-ctk 1 block=65536\nU 52 00\nR one 2\n")
    with pytest.raises(ValueError, match="cannot replay line 'R one 2'"):
        ChangeTracker(path)
