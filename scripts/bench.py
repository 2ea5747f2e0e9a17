"""vcbproxy benchmarks: rates as ratios against raw baselines measured in the same run.

Absolute numbers depend on the machine; a ratio against a raw peer on the same machine, in the
same run, does not (much). Each section is a function registered with ``@section(name)``; it
gets the shared ``Bench`` context (one lab, started on first use) and returns a dict of results
with a ``rows`` list for the table. Later sections (mount nbd/nbdssl, san, ssh, memory,
compare) register the same way.

    scripts/bench [--only fileservice[,other]] [--disk-size 1G] [--repeat 3] [--out FILE]

Results are merged by section into ``.bench/results.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench_sections"))

from _common import CBT_VM, EMPTY_VM, log, warm  # noqa: E402

from vcblab.client import LabClient  # noqa: E402
from vcblab.process import start_lab  # noqa: E402

SECTIONS: dict[str, Callable[[Bench], dict]] = {}


def section(name: str):
    """Register a benchmark section under ``name`` (run in registration order)."""

    def register(fn):
        SECTIONS[name] = fn
        return fn

    return register


# -- shared context ----------------------------------------------------------------------------


class Bench:
    """What sections share: options, a temp dir, one lab (started lazily), cleanup."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.stack = contextlib.ExitStack()
        self.tmp = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="vcbbench-")))
        self._lab = None
        self._cookie = None

    def close(self) -> None:
        self.stack.close()

    @property
    def lab(self):
        """The running lab process (``.info`` is its JSON line)."""
        if self._lab is None:
            # The san section's mostly-empty case needs one large disk (see transports.py);
            # only that section gets it, so the others keep measuring the same lab.
            big = {EMPTY_VM: self.args.san_empty_size} if "san" in self.args.sections else {}
            if "cbt" in self.args.sections:  # the govmomi cbt section's 40 % allocated disk
                big[CBT_VM] = self.args.cbt_size
            log(
                f"starting lab (disk size {self.args.disk_size}"
                + "".join(f", {name} {size}" for name, size in big.items())
                + ") ..."
            )
            self._lab = self.stack.enter_context(
                # Two 8 GiB disks, 40 % random data each, took over the default minute to
                # write on 2 shared cores, and the lab was killed before it answered.
                start_lab(
                    self.tmp / "lab",
                    disk_size=self.args.disk_size,
                    big_vms=big,
                    startup_timeout=600 if big else 60,
                )
            )
        return self._lab

    @property
    def info(self) -> dict:
        return self.lab.info

    def cookie(self) -> str:
        """A SOAP session cookie (``vmware_soap_session=...``) for the data-plane URLs."""
        if self._cookie is None:
            self._cookie = LabClient(self.info).login()
        return self._cookie

    def largest_disk(self) -> tuple[str, str, Path]:
        """(datastore name, path inside it, file) of the largest flat extent in the lab."""
        best = None
        for ds_name, ds_dir in self.info["datastores"].items():
            for f in Path(ds_dir).rglob("*-flat.vmdk"):
                if f.parent.name == EMPTY_VM:
                    continue
                size = f.stat().st_size
                if best is None or size > best[0]:
                    best = (size, ds_name, f.relative_to(ds_dir).as_posix(), f)
        if best is None:
            raise SystemExit("bench: the lab has no flat disk extents")
        return best[1], best[2], best[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- measuring -------------------------------------------------------------------------------


def curl_rate(
    url: str,
    expect_bytes: int,
    repeat: int,
    *,
    cookie: str | None = None,
    cacert: str | None = None,
) -> dict:
    """Best-of-``repeat`` download rate of ``url`` with curl, body discarded."""
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}"]
    if cookie:
        cmd += ["-H", f"Cookie: {cookie}"]
    if cacert:
        cmd += ["--cacert", cacert]
    runs = []
    for _ in range(repeat):
        out = subprocess.run(cmd + [url], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"bench: curl {url} failed: {out.stderr.strip()}")
        code, size, seconds = out.stdout.split()
        if code != "200" or int(size) != expect_bytes:
            raise SystemExit(f"bench: {url}: HTTP {code}, {size} of {expect_bytes} bytes")
        runs.append(float(seconds))
    best = min(runs)
    return {"bytes": expect_bytes, "seconds": runs, "best_bps": expect_bytes / best}


@contextlib.contextmanager
def nginx(docroot: Path, workdir: Path):
    """nginx serving ``docroot`` on loopback with sendfile, as the current user; yields its URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "nginx.conf"
    temps = " ".join(
        f"{k}_temp_path {workdir / k};"
        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx workers would switch to "nobody", who cannot read a private temp dir.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    conf.write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    sendfile_max_chunk 0;   # one sendfile per response, as the lab does
    tcp_nopush on;
    default_type application/octet-stream;
    {temps}
    server {{
        listen 127.0.0.1:{port};
        root {docroot};
        location / {{ }}
    }}
}}
""")
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen(
        [nginx_bin, "-c", str(conf), "-p", str(workdir), "-e", str(workdir / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: nginx did not start: {proc.stderr.read().decode()}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- sections --------------------------------------------------------------------------------


@section("fileservice")
def bench_fileservice(b: Bench) -> dict:
    """The lab's /folder download over plain HTTP (sendfile) and HTTPS vs nginx (sendfile)."""
    ds_name, rel, path = b.largest_disk()
    size = path.stat().st_size
    info, cookie, repeat = b.info, b.cookie(), b.args.repeat
    query = f"?dcPath={quote(info['datacenter'])}&dsName={quote(ds_name)}"
    https_base = f"https://127.0.0.1:{info['https_port']}"
    http_base = info.get("http_url") or f"http://127.0.0.1:{info['http_port']}"
    folder = "/folder/" + quote(rel)
    log(f"fileservice: {rel} on {ds_name}, {size / 2**20:.0f} MiB, best of {repeat}")
    warm([path])  # so neither server pays for the first read from disk
    with nginx(Path(info["datastores"][ds_name]), b.tmp / "nginx") as base:
        raw = curl_rate(f"{base}/{quote(rel)}", size, repeat)
    lab_http = curl_rate(http_base.rstrip("/") + folder + query, size, repeat, cookie=cookie)
    lab_https = curl_rate(
        https_base + folder + query, size, repeat, cookie=cookie, cacert=info["cert_file"]
    )
    base_bps = raw["best_bps"]
    return {
        "file": rel,
        "bytes": size,
        "nginx": raw,
        "lab_http": lab_http,
        "lab_https": lab_https,
        "ratio_lab_http_nginx": lab_http["best_bps"] / base_bps,
        "ratio_lab_https_nginx": lab_https["best_bps"] / base_bps,
        "rows": [
            ("nginx sendfile (baseline)", base_bps, 1.0),
            ("lab /folder plain HTTP", lab_http["best_bps"], lab_http["best_bps"] / base_bps),
            ("lab /folder HTTPS", lab_https["best_bps"], lab_https["best_bps"] / base_bps),
        ],
    }


# -- sections in other files ------------------------------------------------------------------


def load_section_modules(directory: Path = ROOT / "scripts" / "bench_sections") -> None:
    """Import ``scripts/bench_sections/*.py`` except ``_*.py`` (helpers, such as ``_common``);
    each defines ``register(section)`` and registers its sections with it, so a new section
    needs no edit of this file.
    A section function receives the ``Bench`` context (``b.lab``, ``b.info``, ``b.cookie()``,
    ``b.largest_disk()``, ``b.tmp``, ``b.args``) and may use ``curl_rate``/``nginx`` from here
    (``sys.modules["__main__"]``)."""
    import importlib.util

    for path in sorted(directory.glob("*.py")) if directory.is_dir() else []:
        if path.name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"bench_sections.{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.register(section)


# -- driver ----------------------------------------------------------------------------------


def print_table(results: dict[str, dict]) -> None:
    print(f"{'section':<12} {'measurement':<34} {'MiB/s':>10} {'ratio':>7}")
    for name, result in results.items():
        for label, bps, ratio in result.get("rows", []):
            print(f"{name:<12} {label:<34} {bps / 2**20:>10.1f} {ratio:>7.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated section names (default: all)")
    parser.add_argument("--disk-size", default="1G", help="size of the lab's disks (default 1G)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    parser.add_argument(
        "--san-empty-size",
        default="8G",
        help="capacity of the mostly-empty disk of the san section (default 8G)",
    )
    parser.add_argument(
        "--cbt-size",
        default="8G",
        help="capacity of the cbt section's ~40 %% allocated disk (default 8G)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "results.json")
    load_section_modules()
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    args.sections = names
    bench = Bench(args)
    results: dict[str, dict] = {}
    try:
        for name in names:
            results[name] = SECTIONS[name](bench)
    finally:
        bench.close()
    print_table(results)
    previous = {}
    if args.out.exists():
        with contextlib.suppress(ValueError):
            previous = json.loads(args.out.read_text())
    merged = previous.get("sections", {}) | {
        name: {
            **r,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": os.uname().nodename,
            "cpus": os.cpu_count(),
        }
        for name, r in results.items()
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"sections": merged}, indent=2, default=str) + "\n")
    log(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
