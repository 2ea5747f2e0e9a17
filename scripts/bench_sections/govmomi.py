"""Issue 18: vcbproxy against govmomi, the tool an admin reaches for instead of it.

The peer is ``scripts/bench_peers/govmomi`` (built from Debian's govmomi like vcsim):
``download`` is ``object.Datastore.DownloadFile`` (what ``govc datastore.download`` runs:
one GET, ``io.Copy`` into a file, every byte written, no hash, no fsync); ``export`` is an
``nfc.Lease`` export as ``govc export.ovf`` makes it. vcbproxy runs as the CLI a user runs.
Contenders take turns in every round (peer, vcbproxy, peer, ...), ``--repeat`` rounds (at
least 3), so load from elsewhere on the machine falls on both; each result is the median
with its range, and each ratio (peer seconds / vcbproxy seconds, > 1: vcbproxy faster) is
the median of the rounds' own ratios with their range.

``download``  1 GiB disk the host cannot map (no CBT: every byte read), ~40 % data:
              ``mount -m nbdssl --format flat`` (whole VM, snapshot, SHA-256) vs the peer's
              download of the disk (descriptor + flat extent) on the lab and on vcsim (the
              lab's bytes, hard-linked into a vcsim VM); ``-m nbd`` vs the peer over the lab's
              plain-HTTP port; ``--checksum none`` for context. Fixed cost of each run: process
              start to the first disk byte and last byte to exit (``--json`` progress lines),
              and the snapshot tasks' own time (vcbproxy.json ``timings``).
``cbt``       an 8 GiB disk, ~40 % allocated, CBT on (allocation map): mount (flat and
              2gbsparse) vs the peer downloading every byte.
``lease``     ``mount -m nfc --format stream`` vs the peer's lease export (ExportVm of the
              powered-off VM, as ``govc export.ovf``; and ExportSnapshot for context).
``jobs``      ``mount -a any --jobs 4`` of vcsim's 8 VMs (1 GiB each, the lab's bytes) vs four
              peer processes at once, each downloading two VMs' disks: aggregate wall clock.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    CBT_VM,
    ROOT,
    VM,
    Export,
    cbt_enabled,
    cli_env,
    export_run,
    log,
    mib,
    process_cpu,
    run_measured,
    vm_files,
    warm,
)

from tests.e2e.cli import endpoint_env  # noqa: E402
from tests.fixtures.endpoints import Endpoint, lab_endpoint, vcsim_endpoint  # noqa: E402
from vcbproxy.vmdk.descriptor import Extent, new_descriptor, render  # noqa: E402

BUILD = ROOT / "scripts" / "lib" / "build-vcsim.sh"
VCSIM_MACHINES = 4  # vcsim -machines 4: 8 VMs (2 hosts' worth of the VPX model)
JOBS = 4


def register(section) -> None:
    section("download")(bench_download)
    section("cbt")(bench_cbt)
    section("lease")(bench_lease)
    section("jobs")(bench_jobs)


# -- statistics ------------------------------------------------------------------------------


def spread(values: list[float]) -> dict:
    """Median and range of ``values`` (a few rounds: the median, not the mean)."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": values,
    }


def paired(peer: list[float], ours: list[float]) -> dict:
    """Ratio peer / ours per round (same round, same load), as ``spread``."""
    return spread([p / o for p, o in zip(peer, ours, strict=True)])


def fmt(s: dict, unit: str = "") -> str:
    return f"{s['median']:.2f}{unit} [{s['min']:.2f}-{s['max']:.2f}]"


def rounds(b) -> int:
    return max(3, b.args.repeat)


def interleave(
    n: int, contenders: dict[str, Callable[[int], dict]], server_pid: int
) -> dict[str, list[dict]]:
    """Run every contender once per round, in turn, ``n`` rounds; {name: [result per round]}.
    Each result gets ``server_cpu``: the CPU seconds the server process used meanwhile."""
    out: dict[str, list[dict]] = {name: [] for name in contenders}
    for i in range(n):
        load = os.getloadavg()[0]
        for name, fn in contenders.items():
            before = process_cpu(server_pid)
            result = fn(i)
            result["server_cpu"] = process_cpu(server_pid) - before
            result["load"] = load
            out[name].append(result)
        log(
            f"  round {i + 1}/{n} (load {load:.1f}): "
            + ", ".join(f"{k} {v[-1]['wall']:.2f} s" for k, v in out.items())
        )
    return out


# -- the govmomi peer ------------------------------------------------------------------------


def peer_binary(b) -> Path:
    if not hasattr(b, "_govmomi_peer"):
        proc = subprocess.run(
            ["bash", str(BUILD), "peer"], capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if proc.returncode:
            raise SystemExit(f"bench: building the govmomi peer failed:\n{proc.stderr[-3000:]}")
        b._govmomi_peer = Path(proc.stdout.strip().splitlines()[-1])
    return b._govmomi_peer


def peer_argv(b, ep: Endpoint, command: str, out: Path) -> tuple[list[str], dict]:
    env = {**os.environ, "PEER_PASSWORD": ep.password}
    url = f"https://{ep.user}@{ep.server}/sdk"
    return [
        str(peer_binary(b)),
        command,
        "-url",
        url,
        "-ca-file",
        ep.cert_file,
        "-out",
        str(out),
    ], env


def peer_download(b, ep: Endpoint, datastore: str, paths: list[str], out: Path, *, http_port=None):
    """One peer process downloading ``paths`` of ``datastore``; (run, its report)."""
    argv, env = peer_argv(b, ep, "download", out)
    argv += ["-dc", ep.datacenter, "-ds", datastore]
    if http_port:
        argv += ["-http-port", str(http_port)]
    run = run_measured([*argv, *paths], env=env, stdout_path=out.with_suffix(".json"))
    if run.code:
        raise SystemExit(f"bench: govmomi-peer download failed: {run.err[-2000:]}")
    return run, json.loads(run.out)


def peer_export(b, ep: Endpoint, vm: str, out: Path, *, snapshot: bool):
    argv, env = peer_argv(b, ep, "export", out)
    argv += ["-vm", f"/{ep.datacenter}/vm/{vm}"] + (["-snapshot"] if snapshot else [])
    run = run_measured(argv, env=env, stdout_path=out.with_suffix(".json"))
    if run.code:
        raise SystemExit(f"bench: govmomi-peer export failed: {run.err[-2000:]}")
    return run, json.loads(run.out)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 << 20):
            digest.update(block)
    return digest.hexdigest()


# -- endpoints -------------------------------------------------------------------------------


def lab_side(b) -> tuple[Endpoint, dict]:
    return lab_endpoint(b.lab), cli_env(b.info)


def vcsim_side(b) -> tuple[Endpoint, dict]:
    """A vcsim of the bench's own, with 8 VMs; started on first use, stopped at the end."""
    if not hasattr(b, "_vcsim"):
        from tests.fixtures.vcsim import start_vcsim, stop_vcsim

        log(f"starting vcsim (-machines {VCSIM_MACHINES}) ...")
        proc, info = start_vcsim(b.tmp / "vcsim", "-machines", str(VCSIM_MACHINES))
        b.stack.callback(stop_vcsim, proc)
        b._vcsim = vcsim_endpoint(info)
        b._vcsim_pid = proc.pid
        b._vcsim_ready = set()
    return b._vcsim, endpoint_env(b._vcsim)


def vcsim_vm(b, vm: str, flat: Path) -> list[str]:
    """Give vcsim's ``vm`` the disk ``flat`` (hard-linked: same bytes, same holes, one copy in
    the page cache), a VMFS descriptor, a .vmx and an .nvram, and size its configured disk to
    match (vcsim's files are empty and its disks 1 MiB). Returns the disk's datastore paths."""
    ep, _ = vcsim_side(b)
    datastore = sorted(ep.datastores)[0]
    paths = [f"{vm}/disk1.vmdk", f"{vm}/disk1-flat.vmdk"]
    if vm in b._vcsim_ready:
        return paths
    from tests.interop.test_export_any_endpoint import set_disk_capacity_kb

    capacity = flat.stat().st_size
    target = ep.path(datastore, paths[1])
    target.unlink(missing_ok=True)
    os.link(flat, target)
    extent = Extent("RW", capacity // 512, "VMFS", "disk1-flat.vmdk")
    ep.write_file(
        datastore, paths[0], render(new_descriptor("vmfs", [extent], capacity=capacity)).encode()
    )
    vmx = (
        f'.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "13"\n'
        f'displayName = "{vm}"\nguestOS = "otherGuest64"\nscsi0.present = "TRUE"\n'
        f'scsi0.virtualDev = "lsilogic"\nscsi0:0.present = "TRUE"\n'
        f'scsi0:0.fileName = "disk1.vmdk"\n'
    )
    ep.write_file(datastore, f"{vm}/{vm}.vmx", vmx.encode())
    ep.write_file(datastore, f"{vm}/{vm}.nvram", bytes(8684))
    set_disk_capacity_kb(ep, vm, capacity // 1024)
    b._vcsim_ready.add(vm)
    return paths


def disk_paths(info: dict, vm: str) -> tuple[str, list[str], Path]:
    """(datastore, [descriptor, flat extent] as datastore paths, the flat extent's file) of
    the lab VM's one disk."""
    ds, files = vm_files(info, vm)
    root = Path(info["datastores"][ds])
    flat = next(p for p in files if p.name.endswith("-flat.vmdk"))
    descriptor = flat.with_name(flat.name.replace("-flat.vmdk", ".vmdk"))
    return ds, [p.relative_to(root).as_posix() for p in (descriptor, flat)], flat


# -- measuring one contender -------------------------------------------------------------------


def timed_export(env: dict, out: Path, selector: str, *args: str) -> dict:
    """One mount: wall, copy phase, fixed cost around the data, peak RSS, what was read."""
    e: Export = export_run(env, out, selector, *args)
    snapshot = sum(
        t
        for m in e.metas
        for k, t in m.get("timings", {}).items()
        if k in ("snapshot_create", "snapshot_remove")
    )
    return {
        "wall": e.run.seconds,
        "copy": e.copy,
        "sync": e.sync,
        "before_data": e.before_data,
        "after_data": e.after_data,
        "fixed": e.before_data + e.after_data,
        "snapshot_tasks": snapshot,
        "max_rss_mib": mib(e.run.max_rss),
        "cpu": e.run.cpu,
        "bytes_read": sum(m["transport"]["bytes_read"] for m in e.metas),
        "timings": [m.get("timings", {}) for m in e.metas],
        "sha256": [d.get("content_sha256") for m in e.metas for d in m["disks"]],
    }


def timed_peer(run, report: dict) -> dict:
    return {
        "wall": run.seconds,
        "before_data": report["first_start"],
        "after_data": run.seconds - report["last_end"],
        "max_rss_mib": mib(run.max_rss),
        "cpu": run.cpu,
        "bytes": sum(f["bytes"] for f in report["files"]),
    }


def summarise(results: dict[str, list[dict]], peer: str, keys=("wall",)) -> dict:
    """Per contender: the median and range of each of ``keys`` and its ratio to ``peer``."""
    out = {}
    for name, runs in results.items():
        entry = {k: spread([r[k] for r in runs]) for k in keys if k in runs[0]}
        if name != peer:
            entry["ratio"] = paired([r["wall"] for r in results[peer]], [r["wall"] for r in runs])
        entry["max_rss_mib"] = max(r.get("max_rss_mib", 0) for r in runs)
        out[name] = entry
    return out


def rows_of(summary: dict, peer: str, size: int, prefix: str) -> list[tuple[str, float, float]]:
    rows = []
    for name, s in summary.items():
        ratio = 1.0 if name == peer else s["ratio"]["median"]
        rows.append((f"{prefix}{name}", size / s["wall"]["median"], ratio))
    return rows


EXPORT_KEYS = (
    "wall",
    "copy",
    "before_data",
    "after_data",
    "fixed",
    "snapshot_tasks",
    "cpu",
    "server_cpu",
)


# -- sections --------------------------------------------------------------------------------


def bench_download(b) -> dict:
    """1 GiB, no allocation map: every byte read by both, on the lab and on vcsim."""
    n = rounds(b)
    lab, lab_env = lab_side(b)
    ds, paths, flat = disk_paths(b.info, VM)
    size = flat.stat().st_size
    warm([flat])
    result = {"vm": VM, "disk_bytes": size, "rounds": n, "endpoints": {}}
    rows = []
    http = b.info["http_port"]
    out = b.tmp / "download"
    out.mkdir(exist_ok=True)

    def peer(ep, datastore, disk, port=None):
        def go(i):
            target = out / f"peer-{i}"
            run, report = peer_download(b, ep, datastore, disk, target, http_port=port)
            got = target / Path(disk[-1]).name
            entry = timed_peer(run, report)
            if i == 0:
                entry["sha256"] = sha256_of(got)  # after the timing: the bytes it wrote
            subprocess.run(["rm", "-rf", str(target)], check=True)
            return entry

        return go

    def ours(env, vm, *args):
        return lambda i: timed_export(env, out / "mount", f"name:{vm}", *args)

    log(f"download: lab {VM}, {mib(size):.0f} MiB disk, {n} rounds")
    lab_runs = interleave(
        n,
        {
            "govmomi https": peer(lab, ds, paths),
            "mount nbdssl flat": ours(lab_env, VM, "-m", "nbdssl", "--format", "flat"),
            "govmomi http": peer(lab, ds, paths, http),
            "mount nbd flat": ours(
                lab_env, VM, "-m", "nbd", "--nbd-port", str(http), "--format", "flat"
            ),
            "mount nbdssl flat --checksum none": ours(
                lab_env, VM, "-m", "nbdssl", "--format", "flat", "--checksum", "none"
            ),
        },
        b.lab.proc.pid,
    )
    _same_bytes(lab_runs, "govmomi https", "mount nbdssl flat")
    plain = ("govmomi http", "mount nbd flat")
    tls = summarise(
        {k: v for k, v in lab_runs.items() if k not in plain}, "govmomi https", EXPORT_KEYS
    )
    http_sum = summarise({k: lab_runs[k] for k in plain}, "govmomi http", EXPORT_KEYS)
    lab_sum = tls | http_sum
    result["endpoints"]["lab"] = lab_sum
    rows += rows_of(tls, "govmomi https", size, "lab: ") + rows_of(
        http_sum, "govmomi http", size, "lab: "
    )

    vcsim, vcsim_env = vcsim_side(b)
    vm = sorted(vcsim.peer["vms"])[0]
    vpaths = vcsim_vm(b, vm, flat)
    vds = sorted(vcsim.datastores)[0]
    log(f"download: vcsim {vm} (the lab's {VM} disk), {n} rounds")
    vc_runs = interleave(
        n,
        {
            "govmomi https": peer(vcsim, vds, vpaths),
            "mount nbdssl flat": ours(vcsim_env, vm, "-m", "nbdssl", "--format", "flat"),
            "mount nbdssl flat --checksum none": ours(
                vcsim_env, vm, "-m", "nbdssl", "--format", "flat", "--checksum", "none"
            ),
        },
        b._vcsim_pid,
    )
    _same_bytes(vc_runs, "govmomi https", "mount nbdssl flat")
    vc_sum = summarise(vc_runs, "govmomi https", EXPORT_KEYS)
    result["endpoints"]["vcsim"] = vc_sum
    rows += rows_of(vc_sum, "govmomi https", size, "vcsim: ")
    for where, s in (("lab", lab_sum), ("vcsim", vc_sum)):
        for name, e in s.items():
            if "ratio" in e:
                log(
                    f"download {where} {name}: wall {fmt(e['wall'], ' s')}, ratio {fmt(e['ratio'])}, "
                    f"fixed {fmt(e['fixed'], ' s')} (snapshot tasks {fmt(e['snapshot_tasks'], ' s')})"
                )
    result["rows"] = rows
    return result


def _same_bytes(results: dict, peer: str, ours: str) -> None:
    """The peer's file and vcbproxy's disk hash alike: both moved the same bytes."""
    want, got = results[peer][0]["sha256"], results[ours][0]["sha256"][0]
    if want != got:
        raise SystemExit(f"bench: {peer} wrote sha256 {want}, {ours} exported {got}")


def bench_cbt(b) -> dict:
    """An 8 GiB disk, ~40 % allocated, CBT on: the allocation map against every byte."""
    n = rounds(b)
    lab, env = lab_side(b)
    ds, paths, flat = disk_paths(b.info, CBT_VM)
    size = flat.stat().st_size
    warm([flat])
    out = b.tmp / "cbt"
    out.mkdir(exist_ok=True)

    def peer(i):
        target = out / f"peer-{i}"
        run, report = peer_download(b, lab, ds, paths, target)
        subprocess.run(["rm", "-rf", str(target)], check=True)
        return timed_peer(run, report)

    log(
        f"cbt: {CBT_VM}, {mib(size):.0f} MiB disk, {flat.stat().st_blocks * 512 / size:.0%} allocated"
    )
    with cbt_enabled(b.info, CBT_VM):
        runs = interleave(
            n,
            {
                "govmomi https": peer,
                "mount nbdssl flat": lambda i: timed_export(
                    env, out / "mount", f"name:{CBT_VM}", "-m", "nbdssl", "--format", "flat"
                ),
                "mount nbdssl 2gbsparse": lambda i: timed_export(
                    env, out / "mount", f"name:{CBT_VM}", "-m", "nbdssl", "--format", "2gbsparse"
                ),
            },
            b.lab.proc.pid,
        )
    for name in ("mount nbdssl flat", "mount nbdssl 2gbsparse"):
        if runs[name][0]["bytes_read"] >= size:
            raise SystemExit(f"bench: cbt: {name} read every byte: no allocation map was used")
    summary = summarise(runs, "govmomi https", EXPORT_KEYS)
    for name, e in summary.items():
        if "ratio" in e:
            log(f"cbt {name}: wall {fmt(e['wall'], ' s')}, ratio {fmt(e['ratio'])}")
    return {
        "vm": CBT_VM,
        "disk_bytes": size,
        "allocated": flat.stat().st_blocks * 512,
        "rounds": n,
        "summary": summary,
        "rows": rows_of(summary, "govmomi https", size, ""),
    }


def bench_lease(b) -> dict:
    """NFC: the lab deflates the stream; both read the same lease URLs."""
    n = rounds(b)
    lab, env = lab_side(b)
    _, files = vm_files(b.info, VM)
    warm(files)
    out = b.tmp / "lease"
    out.mkdir(exist_ok=True)

    def peer(snapshot):
        def go(i):
            target = out / f"peer-{i}"
            run, report = peer_export(b, lab, VM, target, snapshot=snapshot)
            subprocess.run(["rm", "-rf", str(target)], check=True)
            return timed_peer(run, report)

        return go

    log(f"lease: {VM} (powered off), {n} rounds")
    runs = interleave(
        n,
        {
            "govmomi ExportVm": peer(False),
            "mount nfc stream": lambda i: timed_export(
                env, out / "mount", f"name:{VM}", "-m", "nfc", "--format", "stream"
            ),
            "govmomi ExportSnapshot": peer(True),
        },
        b.lab.proc.pid,
    )
    summary = summarise(runs, "govmomi ExportVm", EXPORT_KEYS)
    summary["mount nfc stream"]["ratio_vs_export_snapshot"] = paired(
        [r["wall"] for r in runs["govmomi ExportSnapshot"]],
        [r["wall"] for r in runs["mount nfc stream"]],
    )
    for name, e in summary.items():
        if "ratio" in e:
            log(f"lease {name}: wall {fmt(e['wall'], ' s')}, ratio {fmt(e['ratio'])}")
    capacity = sum(p.stat().st_size for p in files if p.name.endswith("-flat.vmdk"))
    return {
        "vm": VM,
        "disk_capacity": capacity,
        "rounds": n,
        "summary": summary,
        "rows": rows_of(summary, "govmomi ExportVm", capacity, ""),
    }


def bench_jobs(b) -> dict:
    """8 VMs at once: ``-a any --jobs 4`` against four peer processes, two VMs each."""
    n = rounds(b)
    _, flat = disk_paths(b.info, VM)[1:]
    warm([flat])
    vcsim, env = vcsim_side(b)
    vms = sorted(vcsim.peer["vms"])
    if len(vms) != 2 * JOBS:
        raise SystemExit(f"bench: jobs: vcsim has {len(vms)} VMs, not {2 * JOBS}")
    disks = {vm: vcsim_vm(b, vm, flat) for vm in vms}
    vds = sorted(vcsim.datastores)[0]
    size = flat.stat().st_size * len(vms)
    out = b.tmp / "jobs"
    out.mkdir(exist_ok=True)

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def peers(i):
        cpu = children_cpu()  # the four peers are the only children waited for until below
        procs = []
        started = time.perf_counter()
        for j in range(JOBS):
            mine = [p for vm in vms[2 * j : 2 * j + 2] for p in disks[vm]]
            argv, penv = peer_argv(b, vcsim, "download", out / f"peer-{i}-{j}")
            argv += ["-dc", vcsim.datacenter, "-ds", vds, *mine]
            procs.append(
                subprocess.Popen(argv, env=penv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            )
        for p in procs:
            _, err = p.communicate()
            if p.returncode:
                raise SystemExit(f"bench: jobs: a govmomi-peer failed: {err.decode()[-2000:]}")
        wall = time.perf_counter() - started
        cpu = children_cpu() - cpu
        subprocess.run(f"rm -rf {out}/peer-*", shell=True, check=True)
        return {"wall": wall, "cpu": cpu}

    log(f"jobs: vcsim, {len(vms)} VMs of {mib(flat.stat().st_size):.0f} MiB, {JOBS} at once")
    runs = interleave(
        n,
        {
            f"{JOBS} govmomi downloads": peers,
            f"mount -a any --jobs {JOBS}": lambda i: timed_export(
                env, out / "mount", "any", "--jobs", str(JOBS), "-m", "nbdssl", "--format", "flat"
            ),
        },
        b._vcsim_pid,
    )
    summary = summarise(
        runs, f"{JOBS} govmomi downloads", ("wall", "copy", "fixed", "cpu", "server_cpu")
    )
    e = summary[f"mount -a any --jobs {JOBS}"]
    log(
        f"jobs: wall {fmt(e['wall'], ' s')}, ratio {fmt(e['ratio'])}, peak RSS {e['max_rss_mib']:.0f} MiB"
    )
    return {
        "vms": len(vms),
        "bytes": size,
        "rounds": n,
        "summary": summary,
        "rows": rows_of(summary, f"{JOBS} govmomi downloads", size, ""),
    }
