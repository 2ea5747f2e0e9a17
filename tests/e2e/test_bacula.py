"""Bacula (Debian's packages) runs a backup job whose ClientRunBeforeJob/AfterJob are our
pre-command/post-command, then restores it; the restore must match the export and the lab.

The first test checks the harness alone against a plain directory, so a Bacula problem is
told apart from a vcbproxy one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_harness_backs_up_and_restores_a_plain_directory(bacula_factory, tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.bin").write_bytes(bytes(range(256)) * 1000)
    (data / "sub" / "b.txt").write_text("hello bacula\n")
    marker = tmp_path / "hooks.log"
    bac = bacula_factory(
        data,
        before=f"/bin/sh -c 'echo before >> {marker}'",
        after=f"/bin/sh -c 'echo after >> {marker}'",
    )

    job = bac.backup()
    assert job.ok, job.output
    assert marker.read_text() == "before\nafter\n"

    where = tmp_path / "restore"
    restored = bac.restore(job.jobid, where)
    assert restored.ok, restored.output
    assert tree_hashes(bac.restored(where)) == tree_hashes(data)


def test_failing_before_command_fails_the_job(bacula_factory, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("x")
    bac = bacula_factory(data, before="/bin/false")
    job = bac.backup()
    assert not job.ok
    assert job.status in "Eef", job.output


def test_bacula_backs_up_a_lab_vm_through_pre_and_post_command(
    bacula_factory, env, lab, lab_client, tmp_path
):
    """The issue's acceptance test: Bacula's ClientRunBeforeJob/AfterJob drive the export."""
    from tests.e2e.cli import ROOT
    from tests.e2e.oracle import assert_export_matches_lab, vcb_snapshots
    from tests.e2e.test_compat_scripts import lab_config
    from vcbproxy.jobs.verify import verify_export
    from vcbproxy.staging.manifest import read_manifest

    stage = tmp_path / "stage"
    stage.mkdir()
    daemon_env = {k: v for k, v in env.items() if not k.startswith("VCBPROXY_")}
    daemon_env["VCBPROXY_CONFIG"] = str(lab_config(tmp_path, lab, stage))
    export = stage / "web01-fullVM"
    bac = bacula_factory(
        export,
        before=f"{ROOT}/scripts/pre-command web01 fullvm",
        after=f"{ROOT}/scripts/post-command web01",
        env=daemon_env,
    )

    job = bac.backup()
    assert job.ok, job.output
    assert not export.exists(), "post-command did not remove the staging directory"
    assert not vcb_snapshots(lab_client, "web01")

    where = tmp_path / "restore"
    restored = bac.restore(job.jobid, where)
    assert restored.ok, restored.output
    copy = bac.restored(where)
    # Identical to the export: every manifest hash matches, nothing missing or extra ...
    manifest = read_manifest(copy / "MANIFEST.sha256")
    hashes = tree_hashes(copy)
    assert {name: hashes.get(name) for name in manifest} == manifest
    report = verify_export(copy, qemu_img=True)
    assert report.ok, report.problems
    # ... and its disks equal the lab VM's disks at the snapshot.
    assert_export_matches_lab(copy, lab_client, tmp_path)


def test_bacula_job_fails_when_the_vm_is_not_found(bacula_factory, env, lab, lab_client, tmp_path):
    from tests.e2e.cli import ROOT
    from tests.e2e.test_compat_scripts import lab_config

    stage = tmp_path / "stage"
    stage.mkdir()
    daemon_env = {k: v for k, v in env.items() if not k.startswith("VCBPROXY_")}
    daemon_env["VCBPROXY_CONFIG"] = str(lab_config(tmp_path, lab, stage))
    bac = bacula_factory(
        stage / "ghost-fullVM",
        before=f"{ROOT}/scripts/pre-command ghost",
        after=f"{ROOT}/scripts/post-command ghost",
        env=daemon_env,
    )
    job = bac.backup()
    assert not job.ok
    assert "no VM" in job.output or "exit 11" in job.output, job.output
    assert list(stage.iterdir()) == []
