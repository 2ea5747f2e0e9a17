"""rsnapshot (Debian's package) runs our pre-command/post-command as cmd_preexec/cmd_postexec
around an rsync of the staging directory; the snapshot it keeps must match the export and
the lab. The first test checks the harness alone against a plain directory."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.cli import ROOT
from tests.e2e.oracle import assert_export_matches_lab, vcb_snapshots
from tests.e2e.test_bacula import tree_hashes
from tests.e2e.test_compat_scripts import lab_config
from tests.fixtures.tools import need
from vcbproxy.jobs.verify import verify_export

RSNAPSHOT = shutil.which("rsnapshot")


@pytest.fixture(autouse=True)
def _tools():
    need("rsnapshot", "rsync")


def rsnapshot(
    tmp: Path,
    source: Path,
    *,
    pre: str | None = None,
    post: str | None = None,
    env: dict | None = None,
) -> tuple[subprocess.CompletedProcess, Path]:
    """Write an rsnapshot.conf (tab-separated, as rsnapshot insists), run 'daily' once, and
    return the result and where the copy of ``source`` lands."""
    root = tmp / "snapshots"
    lines = [
        ("config_version", "1.2"),
        ("snapshot_root", f"{root}/"),
        ("no_create_root", "0"),
        ("cmd_cp", "/bin/cp"),
        ("cmd_rm", "/bin/rm"),
        ("cmd_rsync", shutil.which("rsync")),
        ("retain", "daily\t3"),
        # Without --relative (rsnapshot's default) the copy is not nested under the source's path.
        ("rsync_long_args", "--delete --numeric-ids --delete-excluded"),
        ("lockfile", str(tmp / "rsnapshot.pid")),
        ("logfile", str(tmp / "rsnapshot.log")),
        ("verbose", "3"),
        ("loglevel", "3"),
    ]
    if pre:
        lines.append(("cmd_preexec", pre))
    if post:
        lines.append(("cmd_postexec", post))
    lines.append(("backup", f"{source}/\tlocalhost/"))
    conf = tmp / "rsnapshot.conf"
    conf.write_text("".join(f"{k}\t{v}\n" for k, v in lines))
    proc = subprocess.run(
        [RSNAPSHOT, "-c", str(conf), "daily"], capture_output=True, text=True, env=env, timeout=300
    )
    return proc, root / "daily.0" / "localhost"


def test_harness_copies_a_plain_directory_with_pre_and_post(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.bin").write_bytes(bytes(range(256)) * 100)
    (data / "sub" / "b").write_text("b\n")
    marker = tmp_path / "hooks"
    proc, copy = rsnapshot(
        tmp_path,
        data,
        pre=f"/bin/sh -c 'echo pre >> {marker}'",
        post=f"/bin/sh -c 'echo post >> {marker}'",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert marker.read_text() == "pre\npost\n"
    assert tree_hashes(copy) == tree_hashes(data)


def test_failing_preexec_aborts_the_backup(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("x")
    proc, copy = rsnapshot(tmp_path, data, pre="/bin/false")
    assert proc.returncode != 0
    assert not copy.exists()


def test_rsnapshot_backs_up_a_lab_vm_through_pre_and_post_command(env, lab, lab_client, tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    config = lab_config(tmp_path, lab, stage)
    run_env = {**env, "VCBPROXY_CONFIG": str(config)}
    # rsnapshot checks that a backup source exists when it reads its config, before
    # cmd_preexec runs: so the source is BACKUPROOT, which the pre-command fills.
    proc, kept = rsnapshot(
        tmp_path,
        stage,
        pre=f"{ROOT}/scripts/pre-command web01 fullvm",
        post=f"{ROOT}/scripts/post-command web01",
        env=run_env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    copy = kept / "web01-fullVM"
    # What rsnapshot kept verifies on its own (manifest, VMDKs) and equals the lab at the snapshot.

    report = verify_export(copy, qemu_img=True)
    assert report.ok, report.problems
    assert_export_matches_lab(copy, lab_client, tmp_path)
    assert not (stage / "web01-fullVM").exists()
    assert not vcb_snapshots(lab_client, "web01")
