"""The VCB-compatible scripts against the lab, as a backup product runs them: real processes,
VCB's flags and output shapes, vcbproxy's exit codes, and the failure paths a backup product
sees (VM not found, stale mount point, stale snapshot, wrong credentials)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.cli import ROOT, Result, mount_watching_command_line
from tests.e2e.faults import killed_mid_copy
from tests.e2e.oracle import assert_export_matches_lab, metadata, vcb_snapshots

SLOW = 256 << 10  # bytes/s: an export that is still copying when it is killed
CONN_VARS = ("VCBPROXY_SERVER", "VCBPROXY_USER", "VCBPROXY_PASSWORD", "VCBPROXY_PASSWORD_FILE")


def lab_config(tmp: Path, lab, backuproot: Path, **extra: str) -> Path:
    """An integration config for the lab in VCB's own KEY="value" syntax."""
    info = lab.info
    keys = {
        "BACKUPROOT": str(backuproot),
        "HOST": "127.0.0.1",
        "PORT": str(info["https_port"]),
        "USERNAME": info["user"],
        "PASSWORD_FILE": info["password_file"],
        "THUMBPRINT": info["thumbprint_sha256"],
        "VM_LOOKUP_METHOD": "name",
        "TRANSPORT_MODE": "nbdssl",
        **extra,
    }
    path = tmp / "config.ini"
    path.write_text("".join(f'{k}="{v}"\n' for k, v in keys.items()))
    return path


def script(env: dict, name: str, *args: str, timeout: float = 300) -> Result:
    proc = subprocess.run(
        [str(ROOT / "scripts" / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def flags_env(env):
    """No connection variables: the VCB flags (-h -u -p) must carry everything but the thumbprint."""
    return {k: v for k, v in env.items() if k not in CONN_VARS}


@pytest.fixture
def vcb_flags(lab):
    return ["-h", f"127.0.0.1:{lab.info['https_port']}", "-u", lab.info["user"], "-p", lab.password]


@pytest.fixture
def stage(tmp_path, env):
    """BACKUPROOT and a config pointing at the lab; env for pre/post-command."""
    root = tmp_path / "stage"
    root.mkdir()
    return root


def config_env(env: dict, tmp: Path, lab, root: Path, **extra: str) -> dict:
    only = {k: v for k, v in env.items() if k not in CONN_VARS + ("VCBPROXY_THUMBPRINT",)}
    return {**only, "VCBPROXY_CONFIG": str(lab_config(tmp, lab, root, **extra))}


def moref_of(flags_env, vcb_flags, name: str) -> str:
    res = script(flags_env, "vcbVmName", *vcb_flags, "-s", f"name:{name}")
    assert res.code == 0, res
    return next(line.split(":", 1)[1] for line in res.out.splitlines() if line.startswith("moref:"))


def remove_named(flags_env, vcb_flags, moref: str, name: str) -> None:
    """Leave the shared lab as found: remove every snapshot called ``name`` (via vcbSnapshot -f/-d)."""
    found = script(flags_env, "vcbSnapshot", *vcb_flags, "-f", moref, name)
    for line in found.out.splitlines():
        if line.startswith("SsId:"):
            script(flags_env, "vcbSnapshot", *vcb_flags, "-d", moref, line)


def test_vcbvmname_prints_vcb_blocks_from_vcb_flags(flags_env, vcb_flags, lab):
    res = script(flags_env, "vcbVmName", *vcb_flags, "-s", "ipaddr:10.0.0.11")
    assert res.code == 0, res
    lines = res.out.strip().splitlines()
    assert lines[0] == "Found VM:"
    assert [line.split(":", 1)[0] for line in lines[1:5]] == ["moref", "name", "uuid", "ipaddr"]
    assert "name:web01" in lines and "ipaddr:10.0.0.11" in lines
    assert lab.password not in res.out + res.err


def test_wrong_credentials_exit_10_without_echoing_the_password(flags_env, lab):
    res = script(
        flags_env,
        "vcbVmName",
        "-h",
        f"127.0.0.1:{lab.info['https_port']}",
        "-u",
        lab.info["user"],
        "-p",
        "not-the-password-42",
        "-s",
        "any",
    )
    assert res.code == 10, res
    assert "not-the-password-42" not in res.out + res.err


def test_vm_not_found_exits_11_for_every_entry_point(
    flags_env, vcb_flags, env, lab, tmp_path, stage
):
    assert script(flags_env, "vcbVmName", *vcb_flags, "-s", "name:no-such-vm").code == 11
    res = script(
        flags_env, "vcbMounter", *vcb_flags, "-a", "name:no-such-vm", "-r", str(tmp_path / "x")
    )
    assert res.code == 11, res
    res = script(config_env(env, tmp_path, lab, stage), "pre-command", "no-such-vm")
    assert res.code == 11, res
    assert not (stage / "no-such-vm-fullVM").exists()


def test_vcbmounter_mounts_monolithic_and_unmounts(flags_env, vcb_flags, lab, lab_client, tmp_path):
    target = tmp_path / "web01-fullVM"
    res = script(
        flags_env,
        "vcbMounter",
        *vcb_flags,
        "-a",
        "name:web01",
        "-r",
        str(target),
        "-t",
        "fullvm",
        "-m",
        "nbdssl",
        "-M",
        "1",
        "-L",
        "0",
    )
    assert res.code == 0, res
    meta = assert_export_matches_lab(target, lab_client, tmp_path)
    assert meta["format_written"] == "monolithic"
    assert not vcb_snapshots(lab_client, "web01")
    res = script(flags_env, "vcbMounter", *vcb_flags, "-U", str(target))
    assert res.code == 0, res
    assert not target.exists()
    # Backup products call the unmount on every path: a second one is not an error.
    assert script(flags_env, "vcbMounter", *vcb_flags, "-U", str(target)).code == 0


def test_the_running_vcbmounter_never_shows_the_password_in_its_command_line(
    flags_env, vcb_flags, lab, lab_client, tmp_path
):
    """VCB's ``-p PASSWORD``, given to the scripts/ wrapper: while the export runs (slowed
    down so there is time to look), the tool's /proc/<pid>/cmdline, which any local user can
    read, never holds the password; the export still logs in with it."""
    lab_client.set_faults(throttle_bps=4 << 20)
    target = tmp_path / "web01-fullVM"
    argv = [str(ROOT / "scripts" / "vcbMounter"), *vcb_flags, "-a", "name:web01", "-r", str(target)]
    mount_watching_command_line(argv, target, lab.password, env=flags_env)
    assert_export_matches_lab(target, lab_client, tmp_path)
    assert script(flags_env, "vcbMounter", *vcb_flags, "-U", str(target)).code == 0


def test_vcbmounter_refuses_file_level_and_hotadd_before_connecting(flags_env, tmp_path):
    res = script(
        flags_env,
        "vcbMounter",
        "-h",
        "127.0.0.1:1",
        "-u",
        "x",
        "-a",
        "any",
        "-r",
        str(tmp_path / "d"),
        "-t",
        "file",
    )
    assert res.code == 19 and "-t file" in res.err
    res = script(
        flags_env,
        "vcbMounter",
        "-h",
        "127.0.0.1:1",
        "-u",
        "x",
        "-a",
        "any",
        "-r",
        str(tmp_path / "d"),
        "-m",
        "hotadd",
    )
    assert res.code == 19 and "hotadd" in res.err
    assert not (tmp_path / "d").exists()


def test_vcbsnapshot_create_find_delete(flags_env, vcb_flags, lab_client):
    moref = moref_of(flags_env, vcb_flags, "files01")
    res = script(flags_env, "vcbSnapshot", *vcb_flags, "-c", moref, "nightly-test")
    assert res.code == 0, res
    ssid = res.out.strip().removeprefix("SsId:")
    assert res.out.strip() == f"SsId:{ssid}" and ssid
    try:
        res = script(flags_env, "vcbSnapshot", *vcb_flags, "-f", moref, "nightly-test")
        assert res.code == 0 and res.out.strip().splitlines() == [f"SsId:{ssid}"], res
        assert script(flags_env, "vcbSnapshot", *vcb_flags, "-f", moref, "no-such-name").code == 11
        listed = script(flags_env, "vcbSnapshot", *vcb_flags, "-l", moref)
        assert f"SsId:{ssid}" in listed.out, listed
    finally:
        res = script(flags_env, "vcbSnapshot", *vcb_flags, "-d", moref, f"SsId:{ssid}")
    assert res.code == 0, res
    assert script(flags_env, "vcbSnapshot", *vcb_flags, "-f", moref, "nightly-test").code == 11


def test_pre_and_post_command_export_and_remove(env, lab, lab_client, tmp_path, stage):
    cenv = config_env(env, tmp_path, lab, stage, EXPORT_FORMAT="flat")
    res = script(cenv, "pre-command", "web01", "fullvm")
    assert res.code == 0, res
    target = stage / "web01-fullVM"
    meta = assert_export_matches_lab(target, lab_client, tmp_path)
    assert meta["format_written"] == "flat"
    assert script(cenv, "post-command", "web01").code == 0
    assert not target.exists() and not vcb_snapshots(lab_client, "web01")
    assert script(cenv, "post-command", "web01").code == 0


def test_stale_mount_point_fails_or_is_replaced_per_config(env, lab, lab_client, tmp_path, stage):
    target = stage / "files01-fullVM"
    first = script(config_env(env, tmp_path, lab, stage), "pre-command", "files01")
    assert first.code == 0, first
    old_snapshot = metadata(target)["snapshot"]["moref"]
    # The post-command never ran (the backup crashed): the next run meets the old directory.
    res = script(config_env(env, tmp_path, lab, stage), "pre-command", "files01")
    assert res.code == 14, res
    assert metadata(target)["snapshot"]["moref"] == old_snapshot  # left untouched
    cenv = config_env(env, tmp_path, lab, stage, PREEXISTING_MOUNTPOINT="delete")
    res = script(cenv, "pre-command", "files01")
    assert res.code == 0, res
    assert metadata(target)["snapshot"]["moref"] != old_snapshot
    assert script(cenv, "post-command", "files01").code == 0
    assert not target.exists()


def test_stale_snapshot_fails_or_is_removed_per_config(
    env, flags_env, vcb_flags, lab, lab_client, tmp_path, stage
):
    # What a crashed run leaves: a snapshot whose owner, a killed vcbproxy, is provably gone.
    stale = killed_mid_copy(env, lab_client, "files01", tmp_path / "killed", throttle=SLOW)
    moref = moref_of(flags_env, vcb_flags, "files01")
    try:
        res = script(config_env(env, tmp_path, lab, stage), "pre-command", "files01")
        assert res.code == 12, res
        assert [s["moref"] for s in vcb_snapshots(lab_client, "files01")] == [stale["moref"]]
        cenv = config_env(
            env,
            tmp_path,
            lab,
            stage,
            PREEXISTING_VCB_SNAPSHOT="delete",
            PREEXISTING_MOUNTPOINT="delete",
        )
        res = script(cenv, "pre-command", "files01")
        assert res.code == 0, res
        assert not vcb_snapshots(lab_client, "files01")
        assert script(cenv, "post-command", "files01").code == 0
    finally:
        remove_named(flags_env, vcb_flags, moref, "_VCB-BACKUP_")


def test_vcbcleanup_lists_then_removes_stale_snapshots_and_mounts(
    env, flags_env, vcb_flags, lab, lab_client, tmp_path, stage
):
    cenv = config_env(env, tmp_path, lab, stage)
    assert script(cenv, "pre-command", "files01").code == 0
    moref = moref_of(flags_env, vcb_flags, "web01")
    stale = killed_mid_copy(env, lab_client, "web01", tmp_path / "killed", throttle=SLOW)
    try:
        dry = script(cenv, "vcbCleanup")
        assert dry.code == 0, dry
        assert "web01" in dry.out and str(stage / "files01-fullVM") in dry.out
        assert f"SsId:{stale['moref']}" in dry.out and "would remove" in dry.out
        assert vcb_snapshots(lab_client, "web01") and (stage / "files01-fullVM").exists()
        res = script(cenv, "vcbCleanup", "-y")
        assert res.code == 0, res
    finally:
        remove_named(flags_env, vcb_flags, moref, "_VCB-BACKUP_")
    assert not vcb_snapshots(lab_client, "web01") and not vcb_snapshots(lab_client, "files01")
    assert not (stage / "files01-fullVM").exists() and stage.exists()


def test_config_password_is_not_passed_to_hooks_or_logs(env, lab, tmp_path, stage):
    cenv = config_env(env, tmp_path, lab, stage)
    cenv.pop("VCBPROXY_CONFIG")
    config = lab_config(tmp_path, lab, stage, PASSWORD=lab.password)
    text = config.read_text().replace(f'PASSWORD_FILE="{lab.info["password_file"]}"\n', "")
    config.write_text(text)
    res = script({**cenv, "VCBPROXY_CONFIG": str(config)}, "pre-command", "files01")
    assert res.code == 0, res
    logs = "".join(p.read_text(errors="replace") for p in (stage / "files01-fullVM").glob("*.log"))
    assert lab.password not in logs + res.out + res.err
    assert script({**cenv, "VCBPROXY_CONFIG": str(config)}, "post-command", "files01").code == 0
    assert os.listdir(stage) == []
