"""Run `vcbproxy lab serve` as a child process (tests, demo): start_lab(root) -> LabProcess."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

STARTUP_TIMEOUT = 60.0


class LabStartError(RuntimeError):
    pass


class LabProcess:
    """A running lab; `.info` is the JSON line it printed. Use as a context manager."""

    def __init__(self, proc: subprocess.Popen, info: dict):
        self.proc = proc
        self.info = info

    @property
    def password(self) -> str:
        return Path(self.info["password_file"]).read_text().strip()

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> LabProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_lab(
    root,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    http_port: int = 0,
    vms: int = 0,
    seed: int = 0,
    disk_size: str | int = "32M",
    faults: dict | None = None,
    log_file=None,
    big_vms: dict | None = None,
    program: list[str] | None = None,
    env: dict[str, str] | None = None,
    cwd=None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> LabProcess:
    """Start `python -m vcbproxy lab serve` (the lab lives in vcblab) on `root` and wait for its JSON line.

    ``program`` replaces ``python -m vcbproxy`` (an installed ``vcbproxy`` console script),
    ``env`` the environment, ``cwd`` the directory it runs in; ``startup_timeout`` how long
    it may take to write its disks and answer."""
    argv = [
        *(program or [sys.executable, "-m", "vcbproxy"]),
        "lab",
        "serve",
        "--root",
        str(root),
        "--host",
        host,
        "--port",
        str(port),
        "--http-port",
        str(http_port),
        "--vms",
        str(vms),
        "--seed",
        str(seed),
        "--disk-size",
        str(disk_size),
    ]
    for name, value in (faults or {}).items():
        argv += ["--fault", f"{name}={value}"]
    for name, size in (big_vms or {}).items():
        argv += ["--big-vm", f"{name}={size}"]
    Path(root).mkdir(parents=True, exist_ok=True)
    stderr = open(log_file or Path(root) / "lab-serve.log", "ab")  # noqa: SIM115 (child owns it)
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=cwd)
    stderr.close()
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + startup_timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None and not sel.select(0):
            proc.kill()
            proc.wait()
            log = Path(log_file or Path(root) / "lab-serve.log")
            raise LabStartError(
                f"lab serve did not start (exit {proc.returncode}); "
                f"see {log}: {log.read_text()[-2000:]}"
            )
        if sel.select(min(left, 0.5)):
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk and proc.poll() is not None:
                continue
            line += chunk
    sel.close()
    return LabProcess(proc, json.loads(line.decode()))
