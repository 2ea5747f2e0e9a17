"""Changed block tracking for one lab disk, with vSphere-style change IDs.

A change ID ``"<uuid>/<n>"`` names the disk's state at the end of epoch ``n``. Epoch 0 starts
when tracking is enabled (or reset); :meth:`ChangeTracker.advance` ends the current epoch when a
snapshot is taken and returns its ID. The areas changed after ``"u/n"`` up to ``"u/m"`` are the
blocks recorded in epochs ``n+1 .. m``. An ID with another uuid (tracking was reset, or
disabled and enabled again) is refused with :class:`InvalidChangeId`, as vSphere refuses one.

Persistence: ``<basename>-ctk.vmdk`` is an append-only text log of our own design (the lab is
honest that it is not ESXi's binary ctk format), replayed on load::

    vcbproxy-lab-ctk 1 block=65536      header, written when tracking is enabled or reset
    U 52 3c ... 9a                      the tracking identity (change IDs start over at 0)
    R <first block> <count>             blocks changed in the current epoch
    A <epoch> <journal mark>            epoch ended (a snapshot); the mark names its content
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

from vcbproxy.vmdk.descriptor import ddb_uuid

BLOCK = 64 * 1024
HEADER = f"vcbproxy-lab-ctk 1 block={BLOCK}"


class InvalidChangeId(ValueError):
    """A change ID this tracker cannot answer for (malformed, reset since, or from the future)."""


def new_tracking_uuid() -> str:
    """A uuid written the way ESXi writes change-ID uuids: ``52 xx .. xx-xx .. xx``."""
    return ddb_uuid((b"\x52" + secrets.token_bytes(15)).hex())


class ChangeTracker:
    """Tracks changed 64 KiB blocks per epoch for one disk; persisted in ``path``.

    ``mark_source`` (the disk's journal position) is sampled by :meth:`advance`, so each change
    ID remembers which content it names: ``"*"`` queries answer from the allocated ranges then.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        mark_source: Callable[[], int] | None = None,
        lock: threading.RLock | None = None,
    ):
        self.path = Path(path)
        self._mark_source = mark_source
        # The disk passes its own lock: advance() samples the disk's mark while the disk's
        # writers call record(), so two locks would invite a lock-order deadlock.
        self._lock = lock or threading.RLock()
        self.uuid: str | None = None
        self._epochs: list[set[int]] = []  # blocks changed per epoch; the last is current
        self._marks: dict[int, int | None] = {}
        if self.path.exists():
            text = self.path.read_text(encoding="ascii", errors="replace")
            complete = text[: text.rfind("\n") + 1]
            self._replay(complete)
            if complete != text:  # a torn last line (crash mid-append): cut it off
                with open(self.path, "r+b") as f:
                    f.truncate(len(complete.encode("ascii", errors="replace")))

    # -- state ----------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.uuid is not None

    @property
    def seq(self) -> int:
        return len(self._epochs) - 1

    @property
    def change_id(self) -> str | None:
        """The ID of the current state (None while tracking is off)."""
        with self._lock:
            return f"{self.uuid}/{self.seq}" if self.enabled else None

    def enable(self) -> None:
        with self._lock:
            if not self.enabled:
                self._start_over()

    def disable(self) -> None:
        """Tracking off: the ctk file goes, and every change ID given out so far is void."""
        with self._lock:
            self.uuid = None
            self._epochs, self._marks = [], {}
            self.path.unlink(missing_ok=True)

    def reset(self) -> None:
        """A new tracking identity (as after a crash or a disk move): old IDs become invalid."""
        with self._lock:
            if self.enabled:
                self._start_over()

    def _start_over(self) -> None:
        self.uuid = new_tracking_uuid()
        self._epochs, self._marks = [set()], {}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(f"{HEADER}\nU {self.uuid}\n", encoding="ascii")
        os.replace(tmp, self.path)

    # -- recording ------------------------------------------------------------------------

    def record(self, offset: int, length: int) -> None:
        """Note a guest write of ``length`` bytes at ``offset`` (no-op while tracking is off)."""
        if length <= 0:
            return
        with self._lock:
            if not self.enabled:
                return
            first, last = offset // BLOCK, (offset + length - 1) // BLOCK
            self._epochs[-1].update(range(first, last + 1))
            self._append(f"R {first} {last - first + 1}\n")

    def advance(self) -> str:
        """End the current epoch (a snapshot is being taken); returns the ID naming its state."""
        with self._lock:
            if not self.enabled:
                raise InvalidChangeId("changed block tracking is not enabled on this disk")
            seq = self.seq
            mark = self._mark_source() if self._mark_source else None
            self._marks[seq] = mark
            self._epochs.append(set())
            self._append(f"A {seq} {-1 if mark is None else mark}\n")
            return f"{self.uuid}/{seq}"

    def _append(self, line: str) -> None:
        with open(self.path, "a", encoding="ascii") as f:
            f.write(line)

    def _replay(self, text: str) -> None:
        lines = text.splitlines()
        if not lines or lines[0].split(" ")[0] != HEADER.split(" ")[0]:
            raise ValueError(f"{self.path}: not a lab change-tracking file")
        for line in lines[1:]:
            try:
                self._replay_line(line)
            except ValueError:
                raise ValueError(f"{self.path}: cannot replay line {line!r}") from None

    def _replay_line(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "U":
            self.uuid, self._epochs, self._marks = rest, [set()], {}
        elif kind == "R" and self._epochs:
            first, count = (int(x) for x in rest.split())
            self._epochs[-1].update(range(first, first + count))
        elif kind == "A" and self._epochs:
            seq, mark = (int(x) for x in rest.split())
            self._marks[seq] = None if mark < 0 else mark
            self._epochs.append(set())
        else:
            raise ValueError(line)

    # -- queries --------------------------------------------------------------------------

    def parse(self, change_id: str) -> int:
        """The epoch number of a valid change ID of this tracker; :class:`InvalidChangeId` else."""
        with self._lock:
            if not self.enabled:
                raise InvalidChangeId("changed block tracking is not enabled on this disk")
            uuid, sep, n = (change_id or "").rpartition("/")
            if not sep or not n.isdigit():
                raise InvalidChangeId(f"malformed change ID {change_id!r}")
            if uuid != self.uuid:
                raise InvalidChangeId(
                    f"change ID {change_id!r} is from an earlier tracking "
                    "state (tracking was reset since)"
                )
            if int(n) > self.seq:
                raise InvalidChangeId(f"change ID {change_id!r} names a state not reached yet")
            return int(n)

    def mark_of(self, change_id: str) -> int | None:
        """The journal mark of the state an ID names; None for the current (running) state."""
        with self._lock:
            return self._marks.get(self.parse(change_id))

    def changed(
        self, since: str, until: str, start: int, max_bytes: int | None, capacity: int
    ) -> tuple[list[tuple[int, int]], int]:
        """Areas changed after ``since`` up to ``until`` within ``[start, start+max_bytes)``.

        Returns ``(areas, covered_length)``: merged, block-aligned ``(offset, length)`` pairs
        (clipped to the window) and how much of the disk this answer covers; the caller pages
        on ``start + covered_length``. ``max_bytes`` of None or <= 0 means "to the end".
        """
        with self._lock:
            lo, hi = self.parse(since), self.parse(until)
            if lo > hi:
                raise InvalidChangeId(f"change ID {since!r} is newer than {until!r}")
            blocks: set[int] = set()
            for epoch in self._epochs[lo + 1 : hi + 1]:
                blocks |= epoch
        end = window_end(start, max_bytes, capacity)
        areas = clip(blocks_to_ranges(sorted(blocks)), start, end, capacity)
        return areas, end - start


def window_end(start: int, max_bytes: int | None, capacity: int) -> int:
    if start < 0 or start > capacity:
        raise ValueError(f"start offset {start} is outside the disk ({capacity} bytes)")
    return capacity if not max_bytes or max_bytes <= 0 else min(capacity, start + max_bytes)


def blocks_to_ranges(blocks: list[int]) -> list[tuple[int, int]]:
    """Sorted block numbers → merged byte ranges."""
    out: list[tuple[int, int]] = []
    for b in blocks:
        if out and out[-1][0] + out[-1][1] == b * BLOCK:
            out[-1] = (out[-1][0], out[-1][1] + BLOCK)
        else:
            out.append((b * BLOCK, BLOCK))
    return out


def clip(
    ranges: list[tuple[int, int]], start: int, end: int, capacity: int
) -> list[tuple[int, int]]:
    """Sorted ranges cut to ``[start, end)`` (and the disk); empty pieces dropped."""
    end = min(end, capacity)
    out = []
    for off, length in ranges:
        a, b = max(off, start), min(off + length, end)
        if a < b:
            out.append((a, b - a))
    return out
