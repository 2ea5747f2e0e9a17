"""Issue 4: SAN, SSH and NFC transports, each against the raw peer doing the same job.

``san``:  ``-m san --san-map`` export (flat and 2gbsparse) vs ``cp --sparse=always`` of the
          same files into the same file system, on the lab's disk (~40 % allocated) and on a
          mostly empty one (an 8 GiB disk copied with only its first 5 % of data kept; see
          ``_low_fill_copy``).
``ssh``:  ``-m ssh`` against a real OpenSSH sshd serving the lab's datastores (key auth,
          known_hosts) with 1 and 4 channels, and with ``--ssh-reader dd`` (every byte sent,
          no script on the host), vs one ``ssh host cat <files>`` (OpenSSH client, default
          ciphers on both sides) into /dev/null and into a file.
``nfc``:  ``-m nfc --format stream`` vs curl of the disk URLs of an ExportSnapshot lease that
          the bench opens itself (through vcbproxy.vsphere, on a snapshot of its own), to
          /dev/null and to a file.

Ratio = raw seconds / mount seconds (wall clock of the whole ``vcbproxy mount`` process, so
login, snapshot and its removal count against us); copy-only ratios are in results.json.
Peak RSS of every mount is recorded too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    EMPTY_VM,
    VM,
    best_mount,
    cbt_enabled,
    log,
    mib,
    mount_entry,
    mount_repeats,
    run_measured,
    vm_files,
    warm,
)


def register(section) -> None:
    section("san")(bench_san)
    section("ssh")(bench_ssh)
    section("nfc")(bench_nfc)


def best_of(repeat: int, fn) -> dict:
    runs = [fn() for _ in range(repeat)]
    return {"seconds": min(runs), "runs": runs}


# -- san --------------------------------------------------------------------------------------

LOW_FILL_SHARE = 0.05  # the mostly-empty copy keeps the data of the extent's first 5 %


def bench_san(b) -> dict:
    info = b.info
    san_map = {name: str(path) for name, path in info["datastores"].items()}
    ds, files = vm_files(info)
    # Mostly empty: the big VM's directory copied with only the first LOW_FILL_SHARE of its
    # flat extent kept (holes elsewhere), the datastore mapped to that copy. On a 1 GiB disk
    # the 5 % took 10-20 ms to copy, too short to tell two copiers apart.
    empty_ds, empty_files = vm_files(info, EMPTY_VM)
    low_root = b.tmp / "san-lowfill" / empty_ds
    low_files = _low_fill_copy(empty_files, Path(info["datastores"][empty_ds]), low_root)
    result = {"vm": VM, "files": [p.name for p in files], "cases": {}}
    rows = []
    cases = ((VM, files, san_map), (EMPTY_VM, low_files, san_map | {empty_ds: str(low_root)}))
    for vm, case_files, mapping in cases:
        total = sum(p.stat().st_size for p in case_files)
        allocated = sum(p.stat().st_blocks * 512 for p in case_files)
        case = f"{mib(total) / 1024:.0f} GiB, {allocated / total:.0%} alloc"
        args = [a for name, path in mapping.items() for a in ("--san-map", f"{name}={path}")]
        raw, synced, hashed, mounts = _san_case(b, vm, case_files, args)
        result["cases"][case] = {
            "vm": vm,
            "bytes": total,
            "allocated": allocated,
            "cp": raw,
            "cp_and_sync": synced,
            "cp_and_sha256sum": hashed,
            "mounts": mounts,
        }
        log(
            f"san {case}: {mib(total):.0f} MiB, {mib(allocated):.0f} MiB allocated; "
            f"cp --sparse=always {raw['seconds']:.2f} s"
        )
        rows.append((f"{case}: cp --sparse=always (base)", total / raw["seconds"], 1.0))
        rows.append(
            (
                f"{case}: cp + sha256sum",
                total / hashed["seconds"],
                raw["seconds"] / hashed["seconds"],
            )
        )
        rows.append(
            (f"{case}: cp + sync", total / synced["seconds"], raw["seconds"] / synced["seconds"])
        )
        for label, m in mounts.items():
            rows.append((f"{case}: mount -m san {label}", total / m["wall"], m["ratio_wall"]))
            rows.append(
                (f"{case}: mount -m san {label}, copy phase", total / m["copy"], m["ratio_copy"])
            )
            rows.append(
                (
                    f"{case}: mount -m san {label}, copy + sync vs cp + sync",
                    total / (m["copy"] + m["sync"]),
                    m["ratio_copy_and_sync"],
                )
            )
    result["low_fill"] = (
        f"the lab fills every disk ~40 % (vcblab.content.base_extents, no serve option); "
        f"the mostly-empty case maps the datastore to a copy of {EMPTY_VM}'s directory whose "
        f"flat extent keeps only the data of its first {LOW_FILL_SHARE:.0%} (holes elsewhere): "
        f"the lab still describes the disk, the bytes come from that copy"
    )
    result["rows"] = rows
    return result


def _san_case(b, vm: str, files: list[Path], san_args: list[str]) -> tuple[dict, dict, dict, dict]:
    warm(files)
    target = b.tmp / "cp-out"

    def cp() -> float:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        run = run_measured(["cp", "--sparse=always", *map(str, files), str(target)])
        if run.code:
            raise SystemExit(f"bench: cp failed: {run.err}")
        return run.seconds

    def cp_then(tool: str) -> float:
        # context: cp followed by `tool` on the copies (sha256sum: a peer that also hashes
        # what it copied; sync: a durable copy, as the export makes; cp never syncs)
        seconds = cp()
        run = run_measured([tool, *(str(target / p.name) for p in files)])
        if run.code:
            raise SystemExit(f"bench: {tool} failed: {run.err}")
        return seconds + run.seconds

    raw = best_of(b.args.repeat, cp)
    synced = best_of(b.args.repeat, lambda: cp_then("sync"))
    hashed = best_of(1, lambda: cp_then("sha256sum"))
    shutil.rmtree(target, ignore_errors=True)
    total = sum(p.stat().st_size for p in files)
    mounts = {}
    # flat copies in the kernel (copy_file_range) and the hash worker reads the bytes back;
    # 2gbsparse must pass every byte through the grain writer; --checksum none hashes nothing.
    for label, extra in (
        ("flat", ()),
        ("2gbsparse", ()),
        ("flat --checksum none", ("--checksum", "none")),
    ):
        fmt = label.split()[0]
        m = best_mount(
            b.info,
            b.tmp / "san-out",
            mount_repeats(b),
            "-m",
            "san",
            *san_args,
            "--format",
            fmt,
            *extra,
            vm=vm,
        )
        mounts[label] = mount_entry(
            f"san {label}", m, raw["seconds"], total, disk_raw_s=raw["seconds"]
        )
        mounts[label]["ratio_wall_vs_cp_sha256sum"] = hashed["seconds"] / m["wall"]
        mounts[label]["ratio_wall_vs_cp_sync"] = synced["seconds"] / m["wall"]
        mounts[label]["ratio_copy_and_sync"] = synced["seconds"] / (m["copy"] + m["sync"])
    return raw, synced, hashed, mounts


def _low_fill_copy(files: list[Path], ds_root: Path, target_root: Path) -> list[Path]:
    """Copy the VM's directory; its flat extents keep only their first LOW_FILL_SHARE."""
    out = []
    for path in files:
        dest = target_root / path.relative_to(ds_root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.name.endswith("-flat.vmdk"):
            size = path.stat().st_size
            keep = int(size * LOW_FILL_SHARE) // (1 << 20) * (1 << 20)
            subprocess.run(
                [
                    "dd",
                    f"if={path}",
                    f"of={dest}",
                    "bs=1M",
                    f"count={keep >> 20}",
                    "conv=sparse",
                    "status=none",
                ],
                check=True,
            )
            os.truncate(dest, size)
        else:
            shutil.copyfile(path, dest)
        out.append(dest)
    return out


# -- ssh --------------------------------------------------------------------------------------


def bench_ssh(b) -> dict:
    from tests.fixtures.sshd import start_sshd, stop_sshd

    info = b.info
    ds, files = vm_files(info)
    total = sum(p.stat().st_size for p in files)
    warm(files)
    sshd = start_sshd(b.tmp / "sshd")
    b.stack.callback(stop_sshd, sshd.process)
    sshd.expose_all(info["datastores"])
    ds_root = Path(info["datastores"][ds])
    remote = [f"{sshd.root}/{ds}/{p.relative_to(ds_root).as_posix()}" for p in files]
    ssh = [
        "ssh",
        "-i",
        sshd.client_key,
        "-p",
        str(sshd.port),
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={sshd.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        f"{sshd.user}@{sshd.host}",
        "cat",
        *(_quote(r) for r in remote),
    ]
    sink_file = b.tmp / "ssh-cat.out"

    def cat(sink) -> float:
        run = run_measured(ssh, stdout_path=sink)
        if run.code:
            raise SystemExit(f"bench: {' '.join(ssh[:8])} ... cat failed: {run.err}")
        return run.seconds

    raw_null = best_of(mount_repeats(b), lambda: cat("/dev/null"))
    raw_file = best_of(mount_repeats(b), lambda: cat(sink_file))
    if sink_file.stat().st_size != total:
        raise SystemExit(f"bench: ssh cat gave {sink_file.stat().st_size} bytes, not {total}")
    sink_file.unlink()
    log(
        f"ssh: {VM}, {mib(total):.0f} MiB; ssh cat -> /dev/null {raw_null['seconds']:.2f} s, "
        f"-> file {raw_file['seconds']:.2f} s"
    )
    base = [
        "-m",
        "ssh",
        "--format",
        "flat",
        "--ssh-host",
        sshd.host,
        "--ssh-port",
        str(sshd.port),
        "--ssh-user",
        sshd.user,
        "--ssh-key",
        sshd.client_key,
        "--ssh-known-hosts",
        sshd.known_hosts,
        "--ssh-root",
        sshd.root,
    ]
    result = {
        "vm": VM,
        "bytes": total,
        "baseline": "one `ssh host cat <every file>`",
        "ssh_cat_null": raw_null,
        "ssh_cat_file": raw_file,
        "mounts": {},
    }
    rows = [
        ("ssh cat -> /dev/null (baseline)", total / raw_null["seconds"], 1.0),
        ("ssh cat -> file", total / raw_file["seconds"], raw_null["seconds"] / raw_file["seconds"]),
    ]
    # The default reader is the host's Python (zero blocks as records); --ssh-reader dd
    # sends every byte, as ssh cat does.
    for label, extra in (
        ("--ssh-channels 1", ("--ssh-channels", "1")),
        ("--ssh-channels 4", ("--ssh-channels", "4")),
        ("--ssh-reader dd", ("--ssh-channels", "1", "--ssh-reader", "dd")),
    ):
        m = best_mount(b.info, b.tmp / "ssh-out", mount_repeats(b), *base, *extra)
        e = mount_entry(f"ssh {label}", m, raw_null["seconds"], total)
        e["ratio_wall_vs_file"] = raw_file["seconds"] / m["wall"]
        result["mounts"][label] = e
        rows.append((f"mount -m ssh {label}", total / m["wall"], e["ratio_wall"]))
    # With CBT on, the host's allocation map (change ID "*") says which ~40 % to fetch;
    # `ssh cat` has no such map. Tracking is switched off again so other sections keep
    # measuring whole-disk reads.
    with cbt_enabled(info):
        for label, extra in (("CBT on", ()), ("CBT on, --checksum none", ("--checksum", "none"))):
            m = best_mount(
                b.info, b.tmp / "ssh-out", mount_repeats(b), *base, "--ssh-channels", "1", *extra
            )
            e = mount_entry(f"ssh 1 channel, {label}", m, raw_null["seconds"], total)
            e["ratio_wall_vs_file"] = raw_file["seconds"] / m["wall"]
            result["mounts"][label] = e
            rows.append((f"mount -m ssh, {label}", total / m["wall"], e["ratio_wall"]))
    result["rows"] = rows
    return result


def _quote(path: str) -> str:
    """The remote shell splits the command line again: quote each path for it."""
    return "'" + path.replace("'", "'\\''") + "'"


# -- nfc --------------------------------------------------------------------------------------


def lease_downloads(info: dict, repeat: int, tmp: Path) -> dict:
    """Snapshot the VM, open an ExportSnapshot lease, curl its disk URLs; clean up."""
    from vcbproxy.models import ServerSpec
    from vcbproxy.selectors import parse_selector
    from vcbproxy.vsphere.inventory import resolve_vm
    from vcbproxy.vsphere.lease import ExportLease
    from vcbproxy.vsphere.session import Session
    from vcbproxy.vsphere.snapshots import create_snapshot, remove_snapshot

    opts = ServerSpec(
        server=f"127.0.0.1:{info['https_port']}",
        user=info["user"],
        password=Path(info["password_file"]).read_text().strip(),
        ca_file=info["cert_file"],
    )
    with Session.connect(opts) as session:
        vm = resolve_vm(session, parse_selector(f"name:{VM}"))
        snap = create_snapshot(session, vm, "vcbbench-nfc")
        try:
            with ExportLease.for_snapshot(session, snap) as lease:
                host = f"127.0.0.1:{info['https_port']}"
                urls = [
                    u["url"].replace("://*/", f"://{host}/") for u in lease.device_urls if u["disk"]
                ]
                out = {"urls": len(urls)}
                for sink in ("null", "file"):
                    out[sink] = best_of(
                        repeat,
                        lambda sink=sink: _curl_all(
                            urls, session.cookie, info["cert_file"], None if sink == "null" else tmp
                        ),
                    )
                    lease.progress(50)
                lease.complete()
        finally:
            remove_snapshot(session, snap.moref)
    return out


def _curl_all(urls: list[str], cookie: str, cacert: str, out_dir: Path | None) -> float:
    argv = ["curl", "-sS", "--fail"]
    for i, url in enumerate(urls):
        target = str(out_dir / f"{i}.vmdk") if out_dir else "/dev/null"
        argv += (["--next"] if i else []) + [
            "-H",
            f"Cookie: {cookie}",
            "--cacert",
            cacert,
            "-o",
            target,
            url,
        ]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"bench: curl of the lease URLs failed: {proc.stderr.strip()}")
    if out_dir:
        for i in range(len(urls)):
            (out_dir / f"{i}.vmdk").unlink()
    return seconds


def bench_nfc(b) -> dict:
    info = b.info
    _, files = vm_files(info)
    warm(files)
    out_dir = b.tmp / "nfc-raw"
    out_dir.mkdir(exist_ok=True)
    # ~10 s per download of a 1 GiB disk (the lab compresses on the fly): once each
    raw = lease_downloads(info, 1, out_dir)
    log(
        f"nfc: lease download ({raw['urls']} disk URL(s)) -> /dev/null "
        f"{raw['null']['seconds']:.2f} s, -> file {raw['file']['seconds']:.2f} s"
    )
    m = best_mount(info, b.tmp / "nfc-out", 1, "-m", "nfc", "--format", "stream")
    disk_bytes = sum(d["capacity"] for d in m["meta"]["disks"])  # capacity, not stream size
    e = mount_entry(
        "nfc stream", m, raw["file"]["seconds"], disk_bytes, disk_raw_s=raw["file"]["seconds"]
    )
    e["ratio_wall_vs_null"] = raw["null"]["seconds"] / m["wall"]
    return {
        "vm": VM,
        "disk_capacity": disk_bytes,
        "baseline": "curl of the lease's disk URLs",
        "raw": raw,
        "mount": e,
        # MiB/s of disk capacity exported per second (stream bytes are compressed)
        "rows": [
            ("curl lease URLs -> file (baseline)", disk_bytes / raw["file"]["seconds"], 1.0),
            (
                "curl lease URLs -> /dev/null",
                disk_bytes / raw["null"]["seconds"],
                raw["file"]["seconds"] / raw["null"]["seconds"],
            ),
            ("mount -m nfc --format stream", disk_bytes / m["wall"], e["ratio_wall"]),
        ],
    }
