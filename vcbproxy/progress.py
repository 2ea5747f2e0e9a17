"""Progress of a job: tqdm bars on a terminal, JSON lines for programs, nothing when quiet.

One :class:`Progress` per job, shared by the threads that copy disks in parallel, so
every method takes the same lock. Items are keyed (``"web01:scsi0:0"``); JSON progress
lines are limited to a few per second per item, so a fast copy does not flood a pipe.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vcbproxy.errors import UsageError
from vcbproxy.lines import escape
from vcbproxy.staging.space import human_size

if TYPE_CHECKING:  # imported by BarProgress only: ~30 ms that quiet and JSON runs never need
    from tqdm import tqdm

log = logging.getLogger(__name__)

MODES = ("bar", "json", "quiet")
JSON_INTERVAL = 0.25  # ≤ 4 progress lines per second per item


@dataclass
class _Item:
    total: int
    label: str
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    last_emit: float = 0.0
    bar: tqdm | None = None  # BarProgress's bar of this item


class Progress:
    """Quiet progress (counts only); :meth:`create` picks the right kind for the output."""

    mode = "quiet"

    def __init__(self, *, stream=None):
        self.stream = stream
        self._lock = threading.RLock()
        self._items: dict[str, _Item] = {}
        self._started = time.monotonic()
        self._bytes_done = 0
        self._finished = 0
        self._closed = False

    @classmethod
    def create(cls, mode: str | None, *, stream=None) -> Progress:
        """``mode`` None: bars when stderr is a terminal, else quiet."""
        if mode is None:
            isatty = getattr(sys.stderr, "isatty", None)
            mode = "bar" if isatty is not None and isatty() else "quiet"
        kinds = {"bar": BarProgress, "json": JsonProgress, "quiet": Progress}
        if mode not in kinds:
            raise UsageError(f"unknown progress mode {mode!r}; use one of: {', '.join(MODES)}")
        return kinds[mode](stream=stream)

    # -- the API the jobs call -------------------------------------------------------------

    def start_item(self, key: str, total: int, label: str) -> None:
        with self._lock:
            item = _Item(total=int(total), label=label)
            self._items[key] = item
            self._on_start(key, item)

    def advance(self, key: str, nbytes: int) -> None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                log.debug("progress for unknown item %s", key)
                return
            item.done += nbytes
            self._bytes_done += nbytes
            self._on_advance(key, item, nbytes)

    def finish_item(self, key: str, /, **info) -> None:
        with self._lock:
            item = self._items.pop(key, None)
            if item is None:
                log.debug("finish of unknown item %s", key)
                return
            self._finished += 1
            self._on_finish(key, item, info)

    def event(self, name: str, /, **fields) -> None:
        with self._lock:
            self._on_event(name, fields)

    def close(self, **fields) -> None:
        """End of the job (idempotent); JSON mode writes the final ``done`` line."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._on_close(fields)

    @property
    def summary(self) -> dict:
        return {
            "items": self._finished,
            "bytes": self._bytes_done,
            "seconds": round(time.monotonic() - self._started, 3),
        }

    # -- what each kind shows ---------------------------------------------------------------

    def _on_start(self, key: str, item: _Item) -> None:
        pass

    def _on_advance(self, key: str, item: _Item, nbytes: int) -> None:
        pass

    def _on_finish(self, key: str, item: _Item, info: dict) -> None:
        pass

    def _on_event(self, name: str, fields: dict) -> None:
        pass

    def _on_close(self, fields: dict) -> None:
        pass


def _without_event(fields: dict) -> dict:
    # A field called "event" must not rename the line a reader dispatches on.
    return {k: v for k, v in fields.items() if k != "event"}


class JsonProgress(Progress):
    """One JSON object per line on stdout: disk_start, progress, disk_done, warning, …, done."""

    mode = "json"

    def __init__(self, *, stream=None):
        super().__init__(stream=stream if stream is not None else sys.stdout)
        self._broken = False

    def _emit(self, obj: dict) -> None:
        if self._broken:
            return
        obj.setdefault("time", round(time.time(), 3))
        try:
            self.stream.write(json.dumps(obj, default=str) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            # The reader went away (| head); the job itself must go on.
            self._broken = True

    def _on_start(self, key, item):
        self._emit({"event": "disk_start", "key": key, "label": item.label, "total": item.total})

    def _on_advance(self, key, item, nbytes):
        now = time.monotonic()
        if now - item.last_emit < JSON_INTERVAL and item.done < item.total:
            return
        item.last_emit = now
        elapsed = now - item.started
        self._emit(
            {
                "event": "progress",
                "key": key,
                "done": item.done,
                "total": item.total,
                "percent": round(100.0 * item.done / item.total, 1) if item.total else 100.0,
                "rate": round(item.done / elapsed) if elapsed > 0 else 0,
            }
        )

    def _on_finish(self, key, item, info):
        self._emit(
            {
                "event": "disk_done",
                "key": key,
                "label": item.label,
                "done": item.done,
                "total": item.total,
                "seconds": round(time.monotonic() - item.started, 3),
                **_without_event(info),
            }
        )

    def _on_event(self, name, fields):
        self._emit({"event": name, **_without_event(fields)})

    def _on_close(self, fields):
        self._emit({"event": "done", **self.summary, **fields})


class BarProgress(Progress):
    """tqdm bars on stderr: one per item being copied, and a total."""

    mode = "bar"

    def __init__(self, *, stream=None):
        super().__init__(stream=stream if stream is not None else sys.stderr)
        self._total_bar: tqdm | None = None
        self._grand_total = 0
        self._free_positions: list[int] = []
        self._next_position = 1

    def _bar(self, **kwargs) -> tqdm:
        from tqdm import tqdm

        return tqdm(
            file=self.stream,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            dynamic_ncols=True,
            mininterval=0.2,
            **kwargs,
        )

    def _on_start(self, key, item):
        self._grand_total += item.total
        if self._total_bar is None:
            self._total_bar = self._bar(total=self._grand_total, desc="total", position=0)
        else:
            self._total_bar.total = self._grand_total
            self._total_bar.refresh()
        if self._free_positions:
            position = self._free_positions.pop(0)
        else:
            position, self._next_position = self._next_position, self._next_position + 1
        item.bar = self._bar(
            total=item.total, desc=escape(item.label), position=position, leave=False
        )

    def _on_advance(self, key, item, nbytes):
        if item.bar is not None and self._total_bar is not None:  # both made by _on_start
            item.bar.update(nbytes)
            self._total_bar.update(nbytes)

    def _on_finish(self, key, item, info):
        if item.bar is None:
            return
        position = item.bar.pos if hasattr(item.bar, "pos") else None
        item.bar.close()
        if isinstance(position, int):
            self._free_positions.append(abs(position))
            self._free_positions.sort()
        self._write(
            f"{escape(item.label)}: {human_size(item.done)} in {time.monotonic() - item.started:.1f} s"
        )

    def _on_event(self, name, fields):
        if name == "warning":
            self._write(f"warning: {escape(str(fields.get('message', fields)))}")

    def _on_close(self, fields):
        for item in self._items.values():
            if item.bar is not None:
                item.bar.close()
        self._items.clear()
        if self._total_bar is not None:
            self._total_bar.close()

    def _write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.stream)
