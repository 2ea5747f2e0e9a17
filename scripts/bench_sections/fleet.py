"""Issue 19: a fleet of proxies. Aggregate throughput of 3 `vcbproxy fleet worker`s against 1,
each host's link capped by the lab (``host_throttle_bps``), as a datacenter's hosts each have
their own uplink: one proxy reads through one host at a time, three read through three.

The lab gets 12 extra VMs spread over its three hosts (four each) and a real redis-server on
loopback; one job per VM is queued (``--max-per-host 1``), then the run waits for all of them.
The baseline is one worker doing the same in the same run; ratio = its seconds / the fleet's.
Target: >= 2.5.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import log, mib  # noqa: E402

from vcblab.client import LabClient  # noqa: E402
from vcblab.process import start_lab  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXTRA_VMS = 12  # vm000..vm011: four per host
DISK = "32M"
HOST_BPS = 8 << 20  # each host's link: 8 MiB/s, so a VM's disk takes about 4 s to read


def register(section) -> None:
    section("fleet")(bench_fleet)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis(root: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(root)]
        + ["--save", "", "--appendonly", "no", "--logfile", str(root / "redis.log")],
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def _env(info: dict, broker: str, locks: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VCBPROXY_")}
    env.update(
        VCBPROXY_SERVER=f"127.0.0.1:{info['https_port']}",
        VCBPROXY_USER=info["user"],
        VCBPROXY_PASSWORD_FILE=info["password_file"],
        VCBPROXY_THUMBPRINT=info["thumbprint_sha256"],
        VCBPROXY_BROKER=broker,
        VCBPROXY_LOCK_DIR=str(locks),
        PYTHONPATH=str(ROOT),
    )
    return env


def _workers(info: dict, env: dict, root: Path, count: int) -> list[subprocess.Popen]:
    procs = []
    root.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        log_file = root / f"proxy{n}.log"
        argv = [sys.executable, "-m", "vcbproxy", "-v", "fleet", "worker"]
        argv += ["--name", f"proxy{n}", "--staging", str(root / f"proxy{n}")]
        argv += ["-m", "nbd", "--nbd-port", str(info["http_port"])]
        with open(log_file, "wb") as out:
            procs.append(
                subprocess.Popen(
                    argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
    for n, proc in enumerate(procs):
        deadline = time.monotonic() + 60
        while "ready." not in (root / f"proxy{n}.log").read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker proxy{n} did not start: see {root}/proxy{n}.log")
            time.sleep(0.1)
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _submit(info: dict, broker: str, vms: list[str]) -> list[str]:
    """One job per VM (what `fleet submit -a name:VM --max-per-host 1` does), through the
    library on one session: queueing costs milliseconds, not a process start per VM."""
    from vcbproxy.fleet.app import configure
    from vcbproxy.fleet.submit import Submission, submit
    from vcbproxy.jobs.connection import connect
    from vcbproxy.models import ServerSpec
    from vcbproxy.selectors import Selector

    configure(broker)
    spec = ServerSpec(
        server=f"127.0.0.1:{info['https_port']}",
        user=info["user"],
        password=Path(info["password_file"]).read_text().strip(),
        thumbprint=info["thumbprint_sha256"],
    )
    sub = Submission("mount", "{vm}-fullVM", None, 1, {"format": "flat"})
    with connect(spec) as session:
        return [submit(broker, session, Selector("name", vm), sub)[0].id for vm in vms]


def _one_run(info: dict, broker: str, root: Path, workers: int, vms: list[str]) -> float:
    """Seconds from the first job queued to the last VM done, with ``workers`` proxies."""
    import redis

    redis.Redis.from_url(broker).flushall()
    env = _env(info, broker, root / "locks")
    procs = _workers(info, env, root, workers)
    try:
        started = time.perf_counter()
        jobs = _submit(info, broker, vms)
        for job in jobs:
            res = subprocess.run(
                [sys.executable, "-m", "vcbproxy", "fleet", "wait", job, "--timeout", "900"],
                env=env,
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                raise RuntimeError(
                    f"job {job} ended with {res.returncode}: {res.stdout}{res.stderr}"
                )
        return time.perf_counter() - started
    finally:
        _stop(procs)


def bench_fleet(b) -> dict:
    root = b.tmp / "fleet"
    log(
        f"fleet: lab with {EXTRA_VMS} extra VMs of {DISK}, each host capped at {mib(HOST_BPS):.0f} MiB/s"
    )
    with start_lab(root / "lab", disk_size=DISK, vms=EXTRA_VMS) as lab:
        client = LabClient(lab.info)
        client.set_faults(host_throttle_bps=HOST_BPS)
        vms = [f"vm{i:03d}" for i in range(EXTRA_VMS)]
        hosts = {vm: client.state(vm)["host"] for vm in vms}
        total = sum(sum(d["capacity"] for d in client.state(vm)["disks"].values()) for vm in vms)
        seconds = {}
        redis_proc, broker = _redis(root / "redis")
        b.stack.callback(redis_proc.wait, 15)
        b.stack.callback(redis_proc.terminate)
        for workers in (1, 3):
            client.reset_readers()
            log(
                f"fleet: {workers} worker(s), {len(vms)} VMs over {len(set(hosts.values()))} hosts ..."
            )
            seconds[workers] = _one_run(lab.info, broker, root / f"run{workers}", workers, vms)
            record = client.readers()
            peak = max(v["max"] for v in record["hosts"].values())
            log(
                f"fleet: {workers} worker(s): {seconds[workers]:.1f} s, at most {peak} reader(s) per host"
            )
    ratio = seconds[1] / seconds[3]
    rows = [
        ("1 worker (per-host cap)", total / seconds[1], 1.0),
        ("3 workers (per-host cap)", total / seconds[3], ratio),
    ]
    log(f"fleet: scaling 3 vs 1 worker {ratio:.2f}x (target >= 2.5)")
    return {
        "rows": rows,
        "seconds": seconds,
        "bytes": total,
        "host_throttle_bps": HOST_BPS,
        "scaling": round(ratio, 3),
        "target": 2.5,
        "met": ratio >= 2.5,
    }
