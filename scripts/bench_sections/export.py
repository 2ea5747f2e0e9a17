"""Issue 3: full-VM export (``vcbproxy mount``) in network mode, and its memory.

``mount``: nbdssl and nbd exports (flat and 2gbsparse; the export always hashes) against a raw
ranged download of the same files from the same lab in the same run. The transport asks for
each file with one ``Range: bytes=0-<size-1>`` GET and reads it in 1 MiB chunks; the baseline is
curl doing exactly those requests (one process, one kept-alive connection, session cookie),
once writing each file into the staging file system as the export does and once into
/dev/null (the transport's ceiling). Ratio = raw seconds / mount seconds, wall clock of the
whole process (start, login, snapshot, copy, snapshot removal); the copy-only ratio (the
export's own per-disk seconds against curl's time for the disk extents) is in results.json.

``memory``: peak RSS of ``vcbproxy mount`` for the same VM in a lab of disk size S/16 and in
the shared lab of size S (default 1G): flat means the export streams and never holds a disk.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    VM,
    best_mount,
    log,
    mib,
    mount_repeats,
    mount_stats,
    vm_files,
    warm,
)

from vcblab.process import start_lab  # noqa: E402
from vcbproxy.cli.lab import parse_size  # noqa: E402

CASES = [("nbdssl", "flat"), ("nbdssl", "2gbsparse"), ("nbd", "flat"), ("nbd", "2gbsparse")]


def register(section) -> None:
    section("mount")(bench_mount)
    section("memory")(bench_memory)


def curl_files(
    info: dict,
    cookie: str,
    ds: str,
    files: list[Path],
    root: Path,
    *,
    scheme: str,
    out_dir: Path | None,
) -> dict:
    """One curl process GETting every file with a whole-file Range, like the transport."""
    if scheme == "https":
        base, tls = f"https://127.0.0.1:{info['https_port']}", ["--cacert", info["cert_file"]]
    else:
        base, tls = f"http://127.0.0.1:{info['http_port']}", []
    query = f"?dcPath={quote(info['datacenter'])}&dsName={quote(ds)}"
    argv = ["curl", "-sS", "--fail"]
    for i, path in enumerate(files):
        size = path.stat().st_size
        rel = path.relative_to(root).as_posix()
        target = str(out_dir / path.name) if out_dir else "/dev/null"
        argv += (["--next"] if i else []) + [
            "-H",
            f"Cookie: {cookie}",
            *tls,
            "-o",
            target,
            "-w",
            "%{http_code} %{size_download}\\n",
            *(["-H", f"Range: bytes=0-{size - 1}"] if size else []),
            f"{base}/folder/{quote(rel)}{query}",
        ]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    got = [line.split() for line in proc.stdout.splitlines()]
    sizes = [p.stat().st_size for p in files]
    if proc.returncode or [int(n) for _, n in got] != sizes:
        raise SystemExit(
            f"bench: curl of the raw files failed ({proc.returncode}): "
            f"{proc.stderr.strip()} {got} != {sizes}"
        )
    return {"seconds": seconds, "bytes": sum(sizes)}


def best_curl(repeat: int, **kw) -> dict:
    runs = []
    for _ in range(repeat):
        if kw.get("out_dir"):
            shutil.rmtree(kw["out_dir"], ignore_errors=True)
            kw["out_dir"].mkdir(parents=True)
        runs.append(curl_files(**kw))
    if kw.get("out_dir"):
        shutil.rmtree(kw["out_dir"], ignore_errors=True)
    return {
        "seconds": min(r["seconds"] for r in runs),
        "runs": [r["seconds"] for r in runs],
        "bytes": runs[0]["bytes"],
    }


def bench_mount(b) -> dict:
    info, cookie = b.info, b.cookie().split(";")[0]
    repeat, mount_repeat = b.args.repeat, mount_repeats(b)
    ds, files = vm_files(info)
    root = Path(info["datastores"][ds])
    total = sum(p.stat().st_size for p in files)
    log(
        f"mount: {VM}, {len(files)} files, {mib(total):.0f} MiB; "
        f"raw best of {repeat}, mount best of {mount_repeat}"
    )
    warm(files)
    raw = {}
    for scheme in ("https", "http"):
        for sink, out_dir in (("file", b.tmp / "raw-download"), ("null", None)):
            raw[f"{scheme}_{sink}"] = best_curl(
                repeat,
                info=info,
                cookie=cookie,
                ds=ds,
                files=files,
                root=root,
                scheme=scheme,
                out_dir=out_dir,
            )
    result: dict = {
        "vm": VM,
        "files": [p.name for p in files],
        "bytes": total,
        "baseline": "one curl process, one Range: bytes=0-<size-1> GET per file, "
        "same cookie and connection reuse as the transport",
        "raw": raw,
        "mounts": {},
    }
    rows = [
        (f"curl {s} -> file (baseline)", total / raw[f"{s}_file"]["seconds"], 1.0)
        for s in ("https", "http")
    ]
    rows += [
        (
            f"curl {s} -> /dev/null",
            total / raw[f"{s}_null"]["seconds"],
            raw[f"{s}_file"]["seconds"] / raw[f"{s}_null"]["seconds"],
        )
        for s in ("https", "http")
    ]
    for mode, fmt in CASES:
        args = ["-m", mode, "--format", fmt]
        if mode == "nbd":
            args += ["--nbd-port", str(info["http_port"])]
        m = best_mount(info, b.tmp / "mount-out", mount_repeat, *args)
        if abs(m["bytes_read"] - total) > 64 << 10:  # the .vmx differs at the snapshot
            log(f"mount: {mode} {fmt} read {m['bytes_read']} bytes, the baseline {total}")
        scheme = "https" if mode == "nbdssl" else "http"
        file_s, null_s = raw[f"{scheme}_file"]["seconds"], raw[f"{scheme}_null"]["seconds"]
        disk_bytes = sum(d["capacity"] for d in m["meta"]["disks"])
        entry = {
            **mount_stats(m),
            "ratio_wall_vs_file": file_s / m["wall"],
            "ratio_wall_vs_null": null_s / m["wall"],
            # the disk's share of the baseline: curl time scaled by the disk's bytes
            "ratio_copy_vs_file": file_s * disk_bytes / total / m["copy"],
            "ratio_copy_vs_null": null_s * disk_bytes / total / m["copy"],
        }
        result["mounts"][f"{mode}_{fmt}"] = entry
        rows.append(
            (f"mount -m {mode} --format {fmt}", total / m["wall"], entry["ratio_wall_vs_file"])
        )
        log(
            f"mount: {mode} {fmt}: {m['wall']:.2f} s wall, copy {m['copy']:.2f} s, "
            f"ratio {entry['ratio_wall_vs_file']:.2f} (vs /dev/null "
            f"{entry['ratio_wall_vs_null']:.2f}), peak RSS {entry['max_rss_mib']:.0f} MiB"
        )
    result["rows"] = rows
    return result


def bench_memory(b) -> dict:
    big = parse_size(b.args.disk_size)  # as `vcbproxy lab serve --disk-size` reads it
    small = big // 16
    log(f"memory: peak RSS of mount, disk {mib(small):.0f} MiB vs {mib(big):.0f} MiB")
    out = b.tmp / "memory-out"
    with start_lab(b.tmp / "lab-small", disk_size=small) as lab_small:
        m_small = best_mount(lab_small.info, out, 1, "-m", "nbdssl")
    m_big = best_mount(b.info, out, 1, "-m", "nbdssl")
    s, g = mib(m_small["max_rss"]), mib(m_big["max_rss"])
    return {
        "vm": VM,
        "format": "2gbsparse",
        "mode": "nbdssl",
        "small_disk_bytes": small,
        "large_disk_bytes": big,
        "small_max_rss_mib": s,
        "large_max_rss_mib": g,
        "ratio_large_small": g / s,
        "target": "flat (ratio ~1), under 150 MiB",
        # MiB/s column: peak RSS in MiB shown as if bytes/s; ratio: large / small
        "rows": [
            (f"peak RSS MiB, {mib(small):.0f} MiB disk", m_small["max_rss"], 1.0),
            (f"peak RSS MiB, {mib(big):.0f} MiB disk", m_big["max_rss"], g / s),
        ],
    }
