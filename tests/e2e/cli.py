"""Running the vcbproxy CLI as a user does: a real process, env for credentials."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def _without_vcbproxy_settings() -> dict:
    """The test process's environment less its VCBPROXY_* settings, but for the run's own
    lock directory (tests/conftest.py)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VCBPROXY_") or k == "VCBPROXY_LOCK_DIR"
    }


def cli_env(info: dict, **extra: str) -> dict:
    """Environment for a lab (or any endpoint described the same way): password by file."""
    env = _without_vcbproxy_settings()
    env.update(
        VCBPROXY_SERVER=f"127.0.0.1:{info['https_port']}",
        VCBPROXY_USER=info["user"],
        VCBPROXY_PASSWORD_FILE=info["password_file"],
        VCBPROXY_THUMBPRINT=info["thumbprint_sha256"],
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def endpoint_env(ep) -> dict:
    """Environment for any vSphere endpoint of tests.fixtures.endpoints (password inline)."""
    env = _without_vcbproxy_settings()
    env.update(
        VCBPROXY_SERVER=ep.server,
        VCBPROXY_USER=ep.user,
        VCBPROXY_PASSWORD=ep.password,
        VCBPROXY_THUMBPRINT=ep.thumbprint_sha256,
        PYTHONPATH=str(ROOT),
    )
    return env


def run(env: dict, *args: str, timeout: float = 300, cwd: Path = ROOT) -> Result:
    """``vcbproxy ARGS`` in ``cwd`` (the checkout unless a test means another directory)."""
    proc = subprocess.run(
        [sys.executable, "-m", "vcbproxy", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def exported(info: dict, vm: str, target: Path) -> Path:
    """``target`` holding an export of ``vm``, made by ``vcbproxy mount`` against the lab
    described by ``info`` (a fixture's starting point: it must succeed)."""
    res = run(cli_env(info), "mount", "-a", f"name:{vm}", "-r", str(target), "-q")
    assert res.code == 0, res
    return target


def start(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vcbproxy", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def mount_watching_command_line(argv: list[str], target: Path, password: str, **popen) -> Result:
    """Run a VCB tool that exports into ``target`` given ``-p password`` (``argv``), and
    check, from the moment its copy starts until it exits, what any local user could read:
    ``/proc/<pid>/cmdline`` never holds the password, while it does hold the rest of argv."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )
    seen: list[bytes] = []
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if any(target.glob("*.partial")):  # copying: past any start-up
            try:
                seen.append(Path(f"/proc/{proc.pid}/cmdline").read_bytes())
            except OSError:
                break  # exited between poll() and the read
        time.sleep(0.01)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert len(seen) >= 5, "the export was over before its command line could be read"
    shown = list(argv[1:])  # what the tool runs with: its arguments, less -p PASSWORD
    at = shown.index("-p")
    del shown[at : at + 2]
    assert all("\0".join(shown).encode() in line for line in seen), seen[:1]
    assert not [line for line in seen if password.encode() in line]
    return Result(proc.returncode, out, err)
