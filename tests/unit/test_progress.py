"""Progress output: JSON lines shape and rate, bars on a real terminal, silence without one."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from vcbproxy import errors
from vcbproxy.progress import BarProgress, JsonProgress, Progress

REPO = Path(__file__).resolve().parents[2]


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_shape():
    out = io.StringIO()
    p = Progress.create("json", stream=out)
    p.start_item("web01:scsi0:0", 4096, "web01 Hard disk 1")
    p.advance("web01:scsi0:0", 1024)
    p.advance("web01:scsi0:0", 3072)
    p.finish_item("web01:scsi0:0", sha256="ab" * 32, bytes_read=4096)
    p.event("file_done", name="web01.vmx", size=1234, event="ignored")
    p.event("warning", vm="web01", message="scsi0:1 is independent; skipped")
    p.close()
    p.close()
    events = _lines(out)
    assert [e["event"] for e in events] == [
        "disk_start",
        "progress",
        "progress",
        "disk_done",
        "file_done",
        "warning",
        "done",
    ]
    start, first, last, done_disk, file_done, warning, done = events
    assert start == {
        "event": "disk_start",
        "key": "web01:scsi0:0",
        "label": "web01 Hard disk 1",
        "total": 4096,
        "time": start["time"],
    }
    assert first["done"] == 1024 and first["percent"] == 25.0 and first["total"] == 4096
    assert last["done"] == 4096 and last["percent"] == 100.0  # the last one always gets out
    assert (
        done_disk["sha256"] == "ab" * 32
        and done_disk["bytes_read"] == 4096
        and done_disk["done"] == 4096
    )
    assert file_done["name"] == "web01.vmx"
    assert warning["message"].startswith("scsi0:1")
    assert done["items"] == 1 and done["bytes"] == 4096 and "seconds" in done
    assert all(isinstance(e["time"], float) for e in events)


def test_json_progress_is_rate_limited_per_item():
    out = io.StringIO()
    p = JsonProgress(stream=out)
    p.start_item("a", 10**9, "a")
    p.start_item("b", 10**9, "b")
    started = time.monotonic()
    while time.monotonic() - started < 0.6:
        p.advance("a", 1)
        p.advance("b", 1)
    per_item = {
        k: sum(1 for e in _lines(out) if e["event"] == "progress" and e["key"] == k) for k in "ab"
    }
    # 0.6 s at ≤ 4 lines/s: the first line plus at most 3 more (one of slack for timer granularity).
    assert all(1 <= n <= 4 for n in per_item.values()), per_item


def test_threads_share_one_progress():
    out = io.StringIO()
    p = Progress.create("json", stream=out)
    keys = [f"vm:scsi0:{i}" for i in range(4)]

    def copy(key):
        p.start_item(key, 4000 * 256, key)
        for _ in range(4000):
            p.advance(key, 256)
        p.finish_item(key)

    threads = [threading.Thread(target=copy, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.close()
    events = _lines(out)  # every line parses: no interleaving
    done = {e["key"]: e["done"] for e in events if e["event"] == "disk_done"}
    assert done == {k: 4000 * 256 for k in keys}
    assert events[-1]["event"] == "done" and events[-1]["bytes"] == 4 * 4000 * 256


def test_unknown_items_are_ignored_and_broken_pipes_tolerated():
    class Broken(io.StringIO):
        def write(self, s):
            raise BrokenPipeError

    p = Progress.create("json", stream=Broken())
    p.advance("nope", 5)
    p.finish_item("nope")
    p.start_item("a", 1, "a")
    p.event("warning", message="x")
    p.close()


def test_quiet_writes_nothing(capsys):
    p = Progress.create("quiet")
    p.start_item("a", 10, "a")
    p.advance("a", 10)
    p.finish_item("a")
    p.event("warning", message="w")
    p.close()
    assert capsys.readouterr() == ("", "")
    assert p.summary["bytes"] == 10


def test_default_without_a_tty_is_quiet(capsys):
    # Under pytest stderr is captured, i.e. not a terminal.
    p = Progress.create(None)
    assert type(p) is Progress and p.mode == "quiet"


def test_default_on_a_real_terminal_is_bars():
    master, slave = pty.openpty()
    # A fresh pty is 0x0; tqdm draws nothing in zero columns.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    code = (
        "from vcbproxy.progress import Progress\n"
        "p = Progress.create(None)\n"
        "p.start_item('d', 1 << 20, 'web01 disk')\n"
        "p.advance('d', 1 << 20)\n"
        "p.finish_item('d')\n"
        "p.close()\n"
        "print(p.mode)\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], stderr=slave, stdout=subprocess.PIPE, cwd=REPO, timeout=60
        )
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    terminal = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0
    assert proc.stdout.decode().strip() == "bar"
    assert "web01 disk" in terminal and "total" in terminal


def test_bar_mode_renders_to_its_stream():
    out = io.StringIO()
    p = Progress.create("bar", stream=out)
    assert isinstance(p, BarProgress)
    p.start_item("a", 2 << 20, "web01 Hard disk 1")
    p.start_item("b", 1 << 20, "web01 Hard disk 2")
    p.advance("a", 2 << 20)
    p.advance("b", 1 << 20)
    p.event("warning", message="scsi0:2 skipped")
    p.finish_item("a")
    p.finish_item("b")
    p.close()
    text = out.getvalue()
    assert "web01 Hard disk 1: 2.0 MiB in" in text
    assert "warning: scsi0:2 skipped" in text
    assert "total" in text and "100%" in text


def test_unknown_mode():
    with pytest.raises(errors.UsageError, match="bar, json, quiet"):
        Progress.create("fancy")
