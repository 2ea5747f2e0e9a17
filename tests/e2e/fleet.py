"""Three proxies on one machine: `vcbproxy fleet worker` processes, each with its own staging
directory, against the lab and a real redis-server; what they left, read from the disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.cli import ROOT, Result, cli_env, run
from vcbproxy.staging.exportdir import INCOMPLETE_MARKER


@dataclass
class Proxy:
    name: str
    staging: Path
    proc: subprocess.Popen
    log: Path


@dataclass
class Fleet:
    lab_info: dict
    broker: str
    root: Path
    proxies: dict[str, Proxy] = field(default_factory=dict)

    @property
    def env(self) -> dict:
        return cli_env(
            self.lab_info,
            VCBPROXY_BROKER=self.broker,
            VCBPROXY_LOCK_DIR=str(self.root / "locks"),
        )

    def start(self, name: str, *extra: str) -> Proxy:
        staging = self.root / name / "staging"
        log = self.root / name / "worker.log"
        staging.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "vcbproxy",
            "-v",  # INFO: the worker says when it is ready, and what it did
            "fleet",
            "worker",
            "--name",
            name,
            "--staging",
            str(staging),
            "-m",
            "nbd",
            "--nbd-port",
            str(self.lab_info["http_port"]),
            *extra,
        ]
        with open(log, "ab") as out:
            # A session of its own: "the proxy dies" is a SIGKILL of its whole process group.
            proc = subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        self.proxies[name] = Proxy(name, staging, proc, log)
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker {name} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        return self.proxies[name]

    def kill(self, name: str) -> None:
        """kill -9 of a whole proxy: its worker and every pool process."""
        proxy = self.proxies[name]
        os.killpg(proxy.proc.pid, signal.SIGKILL)
        proxy.proc.wait(10)

    def stop_all(self) -> None:
        for proxy in self.proxies.values():
            if proxy.proc.poll() is None:
                os.killpg(proxy.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proxy in self.proxies.values():
            try:
                proxy.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proxy.proc.pid, signal.SIGKILL)
                proxy.proc.wait(10)

    def cli(self, *args: str, timeout: float = 300) -> Result:
        return run(self.env, "fleet", *args, timeout=timeout)

    def submit(self, selector: str, *args: str) -> str:
        res = self.cli("submit", "-a", selector, "--json", *args)
        assert res.code == 0, res
        return json.loads(res.out)["job"]

    def start_wait(self, job: str) -> subprocess.Popen:
        """``fleet wait JOB --json`` running in the background (across a broker restart)."""
        return subprocess.Popen(
            [sys.executable, "-m", "vcbproxy", "fleet", "wait", job, "--json", "--timeout", "240"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def drained(self, timeout: float = 120) -> None:
        """Wait until no VM message is queued or unacknowledged: every delivery, including a
        redelivered one (a dead proxy's, one whose ack the broker restart lost), has run."""
        import redis

        r = redis.Redis.from_url(self.broker)
        deadline = time.monotonic() + timeout
        while r.llen("vcbproxy") or r.hlen("unacked"):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"messages left: {r.llen('vcbproxy')} queued, {r.hlen('unacked')} unacked"
                )
            time.sleep(0.5)

    def status(self, job: str) -> list[dict]:
        res = self.cli("status", job, "--json")
        assert res.code == 0, res
        return json.loads(res.out)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.log.read_text(errors='replace')[-3000:]}"
            for p in self.proxies.values()
        )

    def exports(self) -> dict[str, list[tuple[str, Path]]]:
        """{VM moref: [(proxy, directory)]} of every complete export in every staging."""
        found: dict[str, list[tuple[str, Path]]] = {}
        for proxy in self.proxies.values():
            for meta in proxy.staging.glob("*/vcbproxy.json"):
                directory = meta.parent
                if (directory / INCOMPLETE_MARKER).exists():
                    continue
                vm = json.loads(meta.read_text())["vm"]["moref"]
                found.setdefault(vm, []).append((proxy.name, directory))
        return found

    def incomplete(self) -> list[Path]:
        return [
            marker.parent
            for proxy in self.proxies.values()
            for marker in proxy.staging.glob(f"*/{INCOMPLETE_MARKER}")
        ]
