"""Every path argument of every command means the working directory the command runs in
(issue 14, item 5): real processes started in a scratch directory, given relative paths only,
against the lab over real sockets. Before, ``mount -r out/web01`` tried to write
``out/web01/out/web01/web01.vmx.orig.partial`` (14), ``verify out/web01`` called every file of a
good export "missing" (16) and ``restore -s out/t`` refused for the same reason."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.cli import ROOT, run
from tests.e2e.faults import assert_no_snapshot_left
from tests.e2e.oracle import assert_export_matches_lab

VM = "web01"
RESTORED = "web01-relative-path"


@pytest.fixture
def workdir(tmp_path) -> Path:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return cwd


@pytest.fixture
def restored(lab):
    """The VM the test restores is destroyed afterwards, so the shared lab stays as it was."""
    yield RESTORED
    from tests.fixtures.endpoints import lab_endpoint, server_spec
    from vcbproxy.jobs.connection import connect
    from vcbproxy.selectors import Selector
    from vcbproxy.vsphere.inventory import find_vms
    from vcbproxy.vsphere.register import destroy_vm

    with connect(server_spec(lab_endpoint(lab))) as session:
        for vm in find_vms(session, Selector("name", RESTORED)):
            destroy_vm(session, vm.moref)


def test_mount_verify_restore_unmount_take_relative_paths(
    env, lab_client, workdir, tmp_path, restored
):
    res = run(env, "mount", "-a", f"name:{VM}", "-r", "out/web01", "-q", cwd=workdir)
    assert res.code == 0, res
    export = workdir / "out" / "web01"
    assert not (export / "out").exists()
    assert_export_matches_lab(export, lab_client, tmp_path)
    assert_no_snapshot_left(lab_client, VM)

    res = run(env, "verify", "out/web01", cwd=workdir)
    assert res.code == 0, res
    assert res.err.strip().endswith("ok (10 files, 2 disks, qemu-img check)"), res

    res = run(
        env,
        "restore",
        "-s",
        "out/web01",
        "--name",
        restored,
        "--datastore",
        "datastore2",
        cwd=workdir,
    )
    assert res.code == 0, res
    assert f"{restored}: restored as vm-" in res.out + res.err, res

    res = run(env, "unmount", "-r", "out/web01", cwd=workdir)
    assert res.code == 0, res
    assert not export.exists()
    assert_no_snapshot_left(lab_client, VM)


def test_backup_verify_restore_point_compare_take_relative_paths(env, lab_client, workdir):
    assert run(env, "cbt", "enable", "-a", f"name:{VM}").code == 0
    res = run(env, "backup", "-a", f"name:{VM}", "--repo", "repo", "-q", cwd=workdir)
    assert res.code == 0, res
    assert list((workdir / "repo").glob("*/runs/000001/run.json"))
    assert_no_snapshot_left(lab_client, VM)
    assert run(env, "verify", "--repo", "repo", cwd=workdir).code == 0
    res = run(env, "restore-point", "--repo", "repo", "--run", "1", "--out", "rp/one", cwd=workdir)
    assert res.code == 0, res
    assert (workdir / "rp" / "one" / "restore-point.json").is_file()
    assert not (workdir / "rp" / "one" / "rp").exists()
    res = run(
        env,
        "compare",
        "-a",
        f"name:{VM}",
        "--runs",
        "1",
        "--workdir",
        "cmp",
        "--no-chart",
        cwd=workdir,
    )
    assert res.code == 0, res
    assert (workdir / "cmp" / "compare.json").is_file() and not (workdir / "cmp" / "cmp").exists()
    assert_no_snapshot_left(lab_client, VM)


def _tool(env: dict, cwd: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "scripts" / name), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_vcb_scripts_and_a_relative_backuproot(env, lab, lab_client, workdir, tmp_path):
    """vcbMounter -r/-U with a relative directory; pre- and post-command with a config whose
    BACKUPROOT (and the config's own path) is relative to where the backup product runs them."""
    res = _tool(env, workdir, "vcbMounter", "-a", f"name:{VM}", "-r", "vm/web01", "-t", "fullvm")
    assert res.returncode == 0, res.stderr
    assert_export_matches_lab(workdir / "vm" / "web01", lab_client, tmp_path)
    res = _tool(env, workdir, "vcbMounter", "-U", "vm/web01")
    assert res.returncode == 0, res.stderr
    assert not (workdir / "vm" / "web01").exists()

    info = lab.info
    (workdir / "stage").mkdir()
    (workdir / "config.ini").write_text(
        'BACKUPROOT="stage"\n'
        'HOST="127.0.0.1"\n'
        f'PORT="{info["https_port"]}"\n'
        f'USERNAME="{info["user"]}"\n'
        f'PASSWORD_FILE="{info["password_file"]}"\n'
        f'THUMBPRINT="{info["thumbprint_sha256"]}"\n'
        'VM_LOOKUP_METHOD="name"\n'
    )
    cenv = {k: v for k, v in env.items() if not k.startswith("VCBPROXY_")}
    cenv.update(VCBPROXY_CONFIG="config.ini", PYTHONPATH=env["PYTHONPATH"])
    res = _tool(cenv, workdir, "pre-command", VM)
    assert res.returncode == 0, res.stderr
    assert_export_matches_lab(workdir / "stage" / f"{VM}-fullVM", lab_client, tmp_path)
    res = _tool(cenv, workdir, "post-command", VM)
    assert res.returncode == 0, res.stderr
    assert not (workdir / "stage" / f"{VM}-fullVM").exists()
    assert_no_snapshot_left(lab_client, VM)
