"""Hooks run as real processes: context in, secrets out, output logged, timeouts kill the whole tree."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

import pytest

from vcbproxy import errors
from vcbproxy.hooks import Hook, hook_environment, parse_hook, run_hook

CONTEXT = {
    "VCBPROXY_VM_NAME": "web01 Süd",
    "VCBPROXY_VM_MOREF": "vm-42",
    "VCBPROXY_VM_UUID": "564d-1",
    "VCBPROXY_EXPORT_DIR": "/staging/web01-fullVM",
    "snapshot": "snapshot-7",
}


def _script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_parse_hook():
    assert parse_hook("/usr/bin/backup --job 'web 01' -v") == [
        "/usr/bin/backup",
        "--job",
        "web 01",
        "-v",
    ]
    with pytest.raises(errors.UsageError, match="cannot parse"):
        parse_hook("backup 'unclosed")
    with pytest.raises(errors.UsageError, match="empty"):
        parse_hook("   ")


def test_environment_has_context_and_no_secrets(tmp_path, monkeypatch, caplog):
    for key in [
        "VCBPROXY_PASSWORD",
        "MY_DB_PASSWORD",
        "aws_secret_access_key",
        "GITHUB_TOKEN",
        "PGPASSWD",
        "VCBPROXY_SSH_PASSWORD",
    ]:
        monkeypatch.setenv(key, "hunter2")
    monkeypatch.setenv("HARMLESS", "kept")
    out = tmp_path / "env.txt"
    hook = Hook(
        [_script(tmp_path, "pre.sh", f'env > "{out}"\necho "backing up $VCBPROXY_VM_NAME"\n')]
    )
    with caplog.at_level(logging.INFO, logger="vcbproxy.hooks"):
        run_hook(hook, phase="pre", context=CONTEXT)
    env = dict(
        line.split("=", 1) for line in out.read_text(encoding="utf-8").splitlines() if "=" in line
    )
    assert "hunter2" not in out.read_text(encoding="utf-8")
    assert env["HARMLESS"] == "kept"
    assert env["VCBPROXY_PHASE"] == "pre"
    assert env["VCBPROXY_VM_NAME"] == "web01 Süd"
    assert env["VCBPROXY_VM_MOREF"] == "vm-42"
    assert env["VCBPROXY_EXPORT_DIR"] == "/staging/web01-fullVM"
    assert env["VCBPROXY_SNAPSHOT"] == "snapshot-7"
    assert "pre-command: backing up web01 Süd" in caplog.text
    assert "hunter2" not in caplog.text


def test_hook_environment_drops_secret_context():
    env = hook_environment(
        "post", {"VCBPROXY_TOKEN": "t", "status": "ok"}, base={"PATH": "/bin", "X_SECRET": "s"}
    )
    assert env == {"PATH": "/bin", "VCBPROXY_STATUS": "ok", "VCBPROXY_PHASE": "post"}


def test_runs_without_a_shell(tmp_path):
    marker = tmp_path / "pwned"
    run_hook(
        Hook([sys.executable, "-c", "import sys; sys.exit(0)", f"; touch {marker}"]),
        phase="post",
        context={},
    )
    assert not marker.exists()


def test_nonzero_exit_is_a_hook_error(tmp_path, caplog):
    script = _script(tmp_path, "fail.sh", 'echo "tape drive offline" >&2\nexit 2\n')
    with (
        caplog.at_level(logging.INFO, logger="vcbproxy.hooks"),
        pytest.raises(errors.HookError) as info,
    ):
        run_hook(Hook([script, "arg"]), phase="pre", context={})
    assert str(info.value) == f"pre-command [{script!r}, 'arg'] exited 2"
    assert info.value.exit_code == errors.HOOK
    assert "pre-command [stderr]: tape drive offline" in caplog.text


def test_killed_by_signal(tmp_path):
    script = _script(tmp_path, "die.sh", "kill -9 $$\n")
    with pytest.raises(errors.HookError, match="was killed by SIGKILL"):
        run_hook(Hook([script]), phase="post", context={})


def test_missing_and_non_executable_commands(tmp_path):
    with pytest.raises(errors.HookError, match="not found"):
        run_hook(Hook([str(tmp_path / "nope")]), phase="pre", context={})
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(errors.HookError, match="not executable"):
        run_hook(Hook([str(plain)]), phase="pre", context={})


def test_timeout_kills_the_hook_and_its_children(tmp_path):
    pids = tmp_path / "pids"
    # The child ignores SIGTERM, so only the SIGKILL after the grace period stops it.
    script = _script(
        tmp_path,
        "slow.sh",
        f"""
(trap '' TERM; sleep 300) &
echo $$ $! > "{pids}"
sleep 300
""",
    )
    started = time.monotonic()
    with pytest.raises(errors.HookError, match=r"timed out after 1 s; killed it and its children"):
        run_hook(Hook([script], timeout=1), phase="pre", context={})
    elapsed = time.monotonic() - started
    assert elapsed < 15
    leader, child = map(int, pids.read_text().split())
    deadline = time.monotonic() + 5
    while (_alive(leader) or _alive(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(leader) and not _alive(child)


def test_an_exception_while_waiting_kills_the_hook(tmp_path):
    # What happens on Ctrl-C/SIGTERM: signals_raise turns the signal into an exception in the main thread.
    pidfile = tmp_path / "pid"
    script = _script(tmp_path, "long.sh", f'echo $$ > "{pidfile}"\nexec sleep 300\n')

    def interrupt():
        while not pidfile.exists() or not pidfile.read_text().strip():
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGUSR1)

    def raise_interrupted(signum, frame):
        raise errors.Interrupted(signal.SIGTERM)

    previous = signal.signal(signal.SIGUSR1, raise_interrupted)
    threading.Thread(target=interrupt, daemon=True).start()
    try:
        with pytest.raises(errors.Interrupted):
            run_hook(Hook([script], timeout=60), phase="pre", context={})
    finally:
        signal.signal(signal.SIGUSR1, previous)
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_background_child_holding_the_pipe_does_not_hang_us(tmp_path):
    pidfile = tmp_path / "pid"
    script = _script(tmp_path, "daemon.sh", f'sleep 30 &\necho $! > "{pidfile}"\nexit 0\n')
    started = time.monotonic()
    try:
        run_hook(Hook([script]), phase="post", context={})
        assert time.monotonic() - started < 10
    finally:
        os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_bad_phase():
    with pytest.raises(ValueError):
        run_hook(Hook(["true"]), phase="during", context={})
