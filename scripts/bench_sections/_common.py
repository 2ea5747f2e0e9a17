"""Helpers shared by scripts/bench.py and its sections (no sections of its own; bench.py
skips ``_*.py`` when it loads sections).

Everything here runs real processes: the ``vcbproxy mount`` CLI as a user runs it (credentials
in the environment, as tests/e2e/cli.py does), and the raw peers (curl, cp, ssh). A process's
peak memory comes from GNU ``time`` run between the bench and it (see ``run_measured``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.cli import cli_env  # noqa: E402
from vcbproxy.models import DatastorePath  # noqa: E402

# files01: powered off, one disk on datastore2 -- one disk keeps the run short and the
# baseline's file list obvious. Its lab directory is named after it.
VM = "files01"
# The san section's mostly-empty disk: a VM of its own with one large disk (bench.py adds it
# to the lab only when that section runs).
EMPTY_VM = "empty01"
# The govmomi cbt section's disk: ~40 % allocated, changed block tracking on while measured.
CBT_VM = "cbt01"
# What an export reads from the VM's directory (the lab's .labjournal is lab bookkeeping).
VM_FILE_SUFFIXES = (".vmx", ".nvram", ".log", ".vmdk")


# GNU time: the peak RSS of one process (scripts/bench installs it).
TIME = shutil.which("time", path="/usr/bin:/bin") or "/usr/bin/time"


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class Run(NamedTuple):
    """One finished process: exit code, wall seconds, peak RSS in bytes, its output, and the
    wall clock (``time.time()``) at its start and end, to place its own timestamps."""

    code: int
    seconds: float
    max_rss: int
    out: str
    err: str
    started_at: float = 0.0
    ended_at: float = 0.0
    cpu: float = 0.0  # user + system seconds of the process (and its waited-for children)


def run_measured(
    argv: list[str],
    *,
    env: dict | None = None,
    cwd: Path | None = None,
    stdout_path: str | os.PathLike = os.devnull,
) -> Run:
    """Run ``argv`` to completion; wall time, its peak RSS and its CPU seconds.

    The peak RSS is measured by GNU ``time`` (``%M``) started in between: Linux keeps the
    high-water mark of the image a process replaces at ``exec``, so ``wait4`` on a child
    forked from this bench reports at least the bench's own RSS (~45 MiB, as large as the
    whole export) and hid how much the child itself used; forked from ``time``, the child
    starts from ``time``'s ~2 MiB."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    err_path = tmp / f"vcbbench-{os.getpid()}.err"
    rss_path = tmp / f"vcbbench-{os.getpid()}.rss"
    with open(stdout_path, "wb") as out, open(err_path, "wb") as err:
        started_at = time.time()
        started = time.perf_counter()
        proc = subprocess.Popen(
            [TIME, "-q", "-f", "%M", "-o", str(rss_path), *argv],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        ended_at = time.time()
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    text = err_path.read_text(errors="replace")
    err_path.unlink()
    lines = rss_path.read_text().split() if rss_path.exists() else []
    rss_path.unlink(missing_ok=True)
    max_rss = int(lines[-1]) * 1024 if lines and lines[-1].isdigit() else 0  # KiB
    out_text = ""
    if str(stdout_path) != os.devnull and Path(stdout_path).stat().st_size <= 1 << 20:
        out_text = Path(stdout_path).read_text(errors="replace")  # not a data sink
    cpu = usage.ru_utime + usage.ru_stime
    return Run(code, seconds, max_rss, out_text, text, started_at, ended_at, cpu)


def process_cpu(pid: int) -> float:
    """User + system seconds a running process (a server: the lab, vcsim) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Export(NamedTuple):
    """One ``vcbproxy mount`` process: the run, each exported VM's vcbproxy.json, and when
    the data flowed (from its ``--json`` progress lines, wall clock like ``Run.started_at``)."""

    run: Run
    metas: list[dict]
    first_byte: float  # the first progress line of any disk: its first chunk arrived
    last_byte: float  # the last progress line that completed a disk

    @property
    def before_data(self) -> float:
        """Seconds from process start to the first disk byte."""
        return self.first_byte - self.run.started_at

    @property
    def after_data(self) -> float:
        """Seconds from the last disk byte to process exit."""
        return self.run.ended_at - self.last_byte

    @property
    def copy(self) -> float:
        return sum(d["seconds"] for m in self.metas for d in m["disks"] if not d.get("skipped"))

    @property
    def sync(self) -> float:
        return sum(d.get("sync_seconds", 0) for m in self.metas for d in m["disks"])


def export_run(env: dict, out_dir: Path, selector: str, *args: str) -> Export:
    """``vcbproxy mount -a <selector> -r out_dir --json <args>``, credentials in ``env``.

    ``out_dir`` is removed first, and the export itself afterwards (only the JSON files are
    kept): a 1 GiB export per measurement would otherwise fill the temp dir. JSON progress
    (at most 4 lines a second per disk) costs nothing measurable and says when data flowed.
    """
    shutil.rmtree(out_dir, ignore_errors=True)
    argv = [sys.executable, "-m", "vcbproxy", "mount", "-a", selector, "-r", str(out_dir)]
    lines = out_dir.with_name(out_dir.name + ".jsonl")
    run = run_measured([*argv, "--json", *args], env=env, cwd=ROOT, stdout_path=lines)
    if run.code != 0:
        raise SystemExit(
            f"bench: vcbproxy mount {' '.join(args)} exited {run.code}:\n{run.err[-3000:]}"
        )
    events = [json.loads(line) for line in lines.read_text().splitlines() if line.strip()]
    lines.unlink()
    progress = [e for e in events if e.get("event") == "progress"]
    if not progress:
        raise SystemExit(f"bench: vcbproxy mount {' '.join(args)} reported no progress")
    done = [e["time"] for e in progress if e["done"] >= e["total"]]
    metas = [json.loads(p.read_text()) for p in sorted(out_dir.rglob("vcbproxy.json"))]
    shutil.rmtree(out_dir, ignore_errors=True)
    return Export(run, metas, min(e["time"] for e in progress), max(done or [progress[-1]["time"]]))


def mount(
    info: dict, out_dir: Path, *args: str, vm: str = VM, env: dict | None = None
) -> tuple[Run, dict]:
    """``vcbproxy mount -a name:<vm>`` of one VM (see ``export_run``); (run, its
    vcbproxy.json, with the export's ``before_data``/``after_data`` seconds added)."""
    e = export_run(env or cli_env(info), out_dir, f"name:{vm}", *args)
    return e.run, {**e.metas[0], "_before_data": e.before_data, "_after_data": e.after_data}


def best_mount(info: dict, out_dir: Path, repeat: int, *args: str, vm: str = VM) -> dict:
    """Best-of-``repeat`` mount: wall and copy seconds, peak RSS, what the transport read."""
    runs = []
    for _ in range(repeat):
        run, meta = mount(info, out_dir, *args, vm=vm)
        runs.append(
            {
                "wall": run.seconds,
                "copy": sum(d["seconds"] for d in meta["disks"]),
                "sync": sum(d.get("sync_seconds", 0) for d in meta["disks"]),
                "max_rss": run.max_rss,
                "bytes_read": meta["transport"]["bytes_read"],
                "meta": meta,
            }
        )
    best = min(runs, key=lambda r: r["wall"])
    return {
        "wall": best["wall"],
        "copy": best["copy"],
        "sync": best["sync"],
        "walls": [r["wall"] for r in runs],
        "max_rss": max(r["max_rss"] for r in runs),
        "bytes_read": best["bytes_read"],
        "meta": best["meta"],
    }


def mount_repeats(b) -> int:
    """Mounts take seconds each: best of at most 2."""
    return max(1, min(b.args.repeat, 2))


def mount_stats(m: dict) -> dict:
    """The measurements of a ``best_mount`` result that go into results.json."""
    return {
        "wall": m["wall"],
        "walls": m["walls"],
        "copy": m["copy"],
        "sync": m["sync"],
        "max_rss_mib": mib(m["max_rss"]),
        "bytes_read": m["bytes_read"],
        "bytes_on_wire": m["meta"]["transport"].get("bytes_on_wire"),
    }


def mount_entry(
    name: str, m: dict, raw_s: float, total: int, disk_raw_s: float | None = None
) -> dict:
    """``mount_stats`` plus the ratio against one raw peer's ``raw_s`` seconds (and the
    copy-only ratio against ``disk_raw_s``), logged."""
    entry = {**mount_stats(m), "ratio_wall": raw_s / m["wall"]}
    if disk_raw_s is not None:
        entry["ratio_copy"] = disk_raw_s / m["copy"]
    log(
        f"{name}: {m['wall']:.2f} s wall (copy {m['copy']:.2f} s), raw {raw_s:.2f} s, "
        f"ratio {entry['ratio_wall']:.2f}, peak RSS {entry['max_rss_mib']:.0f} MiB, "
        f"{mib(total / m['wall']):.0f} MiB/s"
    )
    return entry


@contextlib.contextmanager
def cbt_enabled(info: dict, vm: str = VM):
    """Changed block tracking on for ``vm`` while the block runs (``vcbproxy cbt``), so an
    export reads only what the allocation map says; off again afterwards, so other sections
    keep measuring whole-disk reads."""

    def cbt(action: str) -> None:
        run = run_measured(
            [sys.executable, "-m", "vcbproxy", "cbt", action, "-a", f"name:{vm}"],
            env=cli_env(info),
            cwd=ROOT,
        )
        if run.code:
            raise SystemExit(f"bench: vcbproxy cbt {action} exited {run.code}: {run.err[-2000:]}")

    cbt("enable")
    try:
        yield
    finally:
        cbt("disable")


def vm_files(info: dict, vm: str = VM) -> tuple[str, list[Path]]:
    """(datastore, files) an export of ``vm`` reads: the files of its directory.

    The directory comes from ``vcbproxy vms`` (its vmx path), not from guessing names.
    Call it with no export running, so no snapshot delta disks are there.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "vcbproxy", "vms", "-s", f"name:{vm}", "--json"],
        env=cli_env(info),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise SystemExit(f"bench: vcbproxy vms -s name:{vm} failed: {proc.stderr.strip()}")
    vmx = json.loads(proc.stdout)[0]["vmx_path"]  # "[datastore2] files01/files01.vmx"
    where = DatastorePath.parse(vmx)
    ds = where.datastore
    directory = Path(info["datastores"][ds]) / Path(where.path).parent
    files = sorted(
        p for p in directory.iterdir() if p.is_file() and p.name.endswith(VM_FILE_SUFFIXES)
    )
    return ds, files


def warm(paths) -> None:
    """Read files once so every contender starts from the page cache (their data; holes
    read as zeros without the disk, and an 8 GiB hole would fill the cache with zeros)."""
    from vcbproxy.vmdk.io import data_ranges

    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            for offset, length in data_ranges(fd, 0, os.fstat(fd).st_size):
                while length > 0:
                    n = len(os.pread(fd, min(length, 8 << 20), offset))
                    if n == 0:
                        break
                    offset, length = offset + n, length - n
        finally:
            os.close(fd)


def mib(n: float) -> float:
    return n / 2**20
