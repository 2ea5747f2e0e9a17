"""VCB-style full export against CBT backup, side by side, on the same VM states.

For each run: optionally let the guest write (lab churn), then take a full ``mount`` export
and a CBT ``backup`` of the same state, and record what each cost: bytes read from the host,
bytes written locally, wall time, the time the VM ran on a snapshot. Every figure is measured
in this run; nothing is assumed.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcbproxy import errors
from vcbproxy.jobs import cbt
from vcbproxy.jobs.backup import BackupOptions, backup
from vcbproxy.jobs.export import ExportOptions, export_vm
from vcbproxy.models import VmRef
from vcbproxy.progress import Progress
from vcbproxy.staging.exportdir import ExportDir
from vcbproxy.staging.metadata import read_metadata
from vcbproxy.transport import ModeOptions

Churn = Callable[[str, float, int], int]

FIELDS = [
    "run",
    "churn_bytes",
    "full_read",
    "full_written",
    "full_seconds",
    "full_snapshot_seconds",
    "cbt_kind",
    "cbt_changed",
    "cbt_read",
    "cbt_written",
    "cbt_seconds",
    "cbt_snapshot_seconds",
    "read_ratio",
    "window_ratio",
]


@dataclass
class CompareOptions:
    runs: int
    workdir: Path
    mode: str = "nbdssl"
    fmt: str = "2gbsparse"
    transport_options: ModeOptions = field(default_factory=ModeOptions)
    churn_percent: float = 0.0
    # Makes the guest write between runs: (vm name, percent of each disk, seed) -> bytes
    # written. The CLI builds one from the lab's client; the job never sees the lab itself.
    churn: Churn | None = None


def compare(session, vm: VmRef, options: CompareOptions, progress: Progress) -> list[dict]:
    if not all(d.change_id for d in cbt.status(session, vm) if not d.independent):
        cbt.set_tracking(session, vm, True)
    repo = options.workdir / "repo"
    rows = []
    for number in range(1, options.runs + 1):
        churned = 0
        if number > 1 and options.churn_percent and options.churn is not None:
            churned = options.churn(vm.name, options.churn_percent, number)
        row: dict[str, Any] = {"run": number, "churn_bytes": churned}
        row.update(_full(session, vm, options, number, progress))
        row.update(_cbt(session, vm, options, repo, progress))
        row["read_ratio"] = round(row["cbt_read"] / churned, 4) if churned else None
        row["window_ratio"] = (
            round(row["full_seconds"] / row["cbt_seconds"], 2) if row["cbt_seconds"] else None
        )
        rows.append(row)
        progress.event("compare_run", **row)
    return rows


def _full(session, vm, options: CompareOptions, number: int, progress) -> dict:
    target = options.workdir / f"full-{number:03d}"
    started = time.monotonic()
    # VCB's full copy read every block: no allocation map, even though CBT is on here.
    export_vm(
        session,
        vm,
        target,
        ExportOptions(
            target=target,
            mode=options.mode,
            fmt=options.fmt,
            transport_options=options.transport_options,
            allocation_map=False,
        ),
        progress,
    )
    seconds = time.monotonic() - started
    meta = read_metadata(target)
    written = sum(p.stat().st_size for p in target.iterdir() if p.is_file())
    ExportDir.remove(target)
    return {
        "full_read": meta.transport.bytes_read,
        "full_written": written,
        "full_seconds": round(seconds, 3),
        "full_snapshot_seconds": meta.snapshot_seconds,
    }


def _cbt(session, vm, options: CompareOptions, repo: Path, progress) -> dict:
    started = time.monotonic()
    result = backup(
        session,
        vm,
        BackupOptions(repo=repo, mode=options.mode, transport_options=options.transport_options),
        progress,
    )
    seconds = time.monotonic() - started
    kinds = sorted(set(result.kinds.values()))
    return {
        "cbt_kind": "+".join(kinds),
        "cbt_changed": result.changed_bytes,
        "cbt_read": result.bytes_read,
        "cbt_written": result.bytes_written,
        "cbt_seconds": round(seconds, 3),
        "cbt_snapshot_seconds": round(result.snapshot_seconds, 3),
    }


def totals(rows: list[dict]) -> dict:
    total = {"run": "total", "churn_bytes": sum(r["churn_bytes"] for r in rows)}
    for key in FIELDS:
        if key.startswith(("full_", "cbt_")) and key != "cbt_kind":
            total[key] = round(sum(r[key] for r in rows), 3)
    total["cbt_kind"] = ""
    total["read_ratio"] = None
    total["window_ratio"] = (
        round(total["full_seconds"] / total["cbt_seconds"], 2) if total["cbt_seconds"] else None
    )
    return total


def check_chart() -> None:
    """Before the first run: the chart needs matplotlib, which only the ``chart`` extra installs."""
    if importlib.util.find_spec("matplotlib") is None:
        raise errors.UsageError(
            "the chart needs matplotlib: pip install 'vcbproxy[chart]', or give --no-chart"
        )


def write_reports(rows: list[dict], out: Path, *, chart: bool = True) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "compare.json", "csv": out / "compare.csv"}
    table = rows + [totals(rows)]
    paths["json"].write_text(json.dumps({"runs": rows, "total": table[-1]}, indent=2) + "\n")
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(table)
    if chart:
        paths["png"] = out / "compare.png"
        _chart(rows, paths["png"])
    return paths


def render_table(rows: list[dict]) -> str:
    def mib(n):
        return f"{n / (1 << 20):.1f}"

    lines = [
        f"{'run':>5} {'churn MiB':>9} | {'full read':>9} {'wrote':>7} {'window s':>8} {'snap s':>6} | "
        f"{'cbt read':>8} {'wrote':>7} {'window s':>8} {'snap s':>6} | {'read/churn':>10} {'full/cbt':>8}"
    ]
    for r in rows + [totals(rows)]:
        lines.append(
            f"{r['run']:>5} {mib(r['churn_bytes']):>9} | {mib(r['full_read']):>9} {mib(r['full_written']):>7} "
            f"{r['full_seconds']:>8.2f} {r['full_snapshot_seconds']:>6.2f} | {mib(r['cbt_read']):>8} "
            f"{mib(r['cbt_written']):>7} {r['cbt_seconds']:>8.2f} {r['cbt_snapshot_seconds']:>6.2f} | "
            f"{'-' if r['read_ratio'] is None else r['read_ratio']:>10} "
            f"{'-' if r['window_ratio'] is None else r['window_ratio']:>8}"
        )
    return "\n".join(lines)


def _chart(rows: list[dict], path: Path) -> None:
    import matplotlib  # the 'chart' extra: loaded only to draw, and only if installed

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r["run"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.4))
    width = 0.38
    ax1.bar(
        [x - width / 2 for x in runs],
        [r["full_seconds"] for r in rows],
        width,
        label="VCB full export",
    )
    ax1.bar(
        [x + width / 2 for x in runs], [r["cbt_seconds"] for r in rows], width, label="CBT backup"
    )
    ax1.set(title="Backup window per run", xlabel="run", ylabel="seconds", xticks=runs)
    ax2.bar(
        [x - width / 2 for x in runs],
        [r["full_read"] / (1 << 20) for r in rows],
        width,
        label="VCB full export",
    )
    ax2.bar(
        [x + width / 2 for x in runs],
        [r["cbt_read"] / (1 << 20) for r in rows],
        width,
        label="CBT backup",
    )
    ax2.set(title="Bytes read from the host per run", xlabel="run", ylabel="MiB", xticks=runs)
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=2, frameon=False
    )  # below, never over a bar
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
