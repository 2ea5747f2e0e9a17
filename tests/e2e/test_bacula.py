"""Bacula (Debian's packages) runs a backup job whose ClientRunBeforeJob/AfterJob are our
pre-command/post-command, then restores it; the restore must match the export and the lab.

The first test checks the harness alone against a plain directory, so a Bacula problem is
told apart from a vcbproxy one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

pytest_plugins = ["tests.fixtures.bacula"]


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_harness_backs_up_and_restores_a_plain_directory(bacula_factory, tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.bin").write_bytes(bytes(range(256)) * 1000)
    (data / "sub" / "b.txt").write_text("hello bacula\n")
    marker = tmp_path / "hooks.log"
    bac = bacula_factory(data, before=f"/bin/sh -c 'echo before >> {marker}'",
                         after=f"/bin/sh -c 'echo after >> {marker}'")

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
