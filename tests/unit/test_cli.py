"""The command line itself: every command explains itself, bad input is one line and a code."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from vcbproxy.cli import cli


def all_commands(group=cli, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, (*prefix, name))


@pytest.mark.parametrize("path", list(all_commands()), ids=lambda p: " ".join(p))
def test_every_command_has_help(path):
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    cmd = cli
    for name in path:
        cmd = cmd.commands[name]
    assert cmd.help and len(cmd.help.strip()) > 20, path


def vcbproxy(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "vcbproxy", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_missing_server_is_a_usage_error_without_traceback(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    env = {"PATH": "/usr/bin:/bin", "VCBPROXY_PASSWORD_FILE": str(pw)}
    proc = vcbproxy("vms", "-s", "any", env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "vcbproxy: error: no server given: use --server or set VCBPROXY_SERVER"
    ]


def test_bad_selector_and_file_mount_and_hotadd_are_refused_before_connecting(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "VCBPROXY_SERVER": "127.0.0.1:9",
        "VCBPROXY_USER": "u",
        "VCBPROXY_PASSWORD": "p",
    }
    proc = vcbproxy("mount", "-a", "colour:blue", "-r", str(tmp_path / "o"), env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    proc = vcbproxy("mount", "-a", "any", "-t", "file", "-r", str(tmp_path / "o"), env=env)
    assert proc.returncode == 19 and "-t fullvm" in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_password_is_never_an_option():
    params = {p.name for cmd in (cli.commands["mount"], cli.commands["vms"]) for p in cmd.params}
    assert "password" not in params
    assert "password_file" in params


def test_version_and_exit_code_table_in_help():
    proc = vcbproxy("--help")
    assert proc.returncode == 0
    for code in ("10", "11", "12", "13", "14", "143"):
        assert code in proc.stdout


@pytest.mark.parametrize(
    "server, host",
    [
        ("esx1.example.com", "esx1.example.com"),
        ("esx1:8443", "esx1"),
        ("https://vc.example.com:443/sdk", "vc.example.com"),
        ("[fe80::1]:443", "fe80::1"),
        ("[2001:db8::5]", "2001:db8::5"),
    ],
)
def test_ssh_host_defaults_to_the_servers_host_ipv6_included(server, host):
    # what transport_options gives -m ssh when --ssh-host is not given
    from vcbproxy.models import ServerSpec

    assert ServerSpec(server=server, user="u").host == host


VM_COMMANDS = {
    ("mount",): ["-r", "/nonexistent/o"],
    ("backup",): ["--repo", "/nonexistent/r"],
    ("compare",): ["--workdir", "/nonexistent/w", "--no-chart"],
    ("cbt", "enable"): [],
    ("cbt", "disable"): [],
    ("cbt", "status"): [],
    ("snapshot", "create"): [],
    ("snapshot", "list"): [],
    ("snapshot", "delete"): ["snapshot-1"],
    ("fleet", "submit"): ["--mount", "{vm}", "--broker", "redis://127.0.0.1:1/0"],
    ("unmount",): ["-r", "/nonexistent/o"],
}


def test_every_command_naming_a_vm_takes_the_one_vm_option():
    """-a/--vm comes from one decorator (cli.options.vm_option), whatever the command."""
    found = set()
    for path in all_commands():
        cmd = cli
        for name in path:
            cmd = cmd.commands[name]
        for param in cmd.params:
            if "-a" in getattr(param, "opts", ()):
                assert param.opts == ["-a", "--vm"] and param.name == "vm_text", path
                found.add(path)
    assert found == set(VM_COMMANDS)


@pytest.mark.parametrize("path", list(VM_COMMANDS), ids=lambda p: " ".join(p))
def test_a_bad_vm_selector_is_refused_before_anything_connects(path, monkeypatch, capsys):
    from vcbproxy.cli import main

    for name in ("VCBPROXY_SERVER", "VCBPROXY_USER", "VCBPROXY_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VCBPROXY_PASSWORD", "p")  # no prompt, and no server to reach
    with pytest.raises(SystemExit) as exit_:
        main([*path, "-a", "colour:blue", *VM_COMMANDS[path]])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "bad selector 'colour:blue'" in err, err
