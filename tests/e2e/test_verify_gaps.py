"""What verify and restore-point let through (issue 14, item 8), against the lab over real
sockets: an export with an added empty directory verified as intact; a restore point rebuilt
from a repository whose data had a flipped byte exited 0 and recorded the damaged content's
hash; ``verify --repo`` said "ok (0 files, 0 disks)" after checking every run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.cli import exported, run
from tests.e2e.faults import assert_no_snapshot_left, error_line

VM = "web01"


@pytest.fixture
def repo(env, lab_client, tmp_path) -> Path:
    """A CBT repository of web01 with a full and an incremental run."""
    assert run(env, "cbt", "enable", "-a", f"name:{VM}").code == 0
    repo = tmp_path / "repo"
    for _ in range(2):
        res = run(env, "backup", "-a", f"name:{VM}", "--repo", str(repo), "-q")
        assert res.code == 0, res
    assert_no_snapshot_left(lab_client, VM)
    return repo


def test_verify_names_an_added_empty_directory(lab, lab_client, env, tmp_path):
    target = exported(lab.info, VM, tmp_path / "export")
    assert_no_snapshot_left(lab_client, VM)
    assert run(env, "verify", str(target)).code == 0
    (target / "extra" / "deeper").mkdir(parents=True)
    res = run(env, "verify", str(target))
    assert res.code == 16, res
    assert res.out.splitlines() == ["unlisted: extra/"], res
    assert error_line(res.err) == f"vcbproxy: error: {target}: 1 problem(s)"


def test_restore_point_checks_the_runs_data_and_exits_16(env, repo, tmp_path):
    data = sorted(repo.glob("*/runs/000001/disk-*.data"))[0]
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    data.write_bytes(bytes(blob))
    out = tmp_path / "rp"
    res = run(env, "restore-point", "--repo", str(repo), "--run", "2", "--out", str(out))
    assert res.code == 16, res
    assert re.fullmatch(
        rf"vcbproxy: error: 000001/{re.escape(data.name)}: sha256 [0-9a-f]{{64}} is not the "
        r"[0-9a-f]{64} the run recorded; the repository is damaged \('vcbproxy verify --repo' "
        r"lists what\)",
        error_line(res.err),
    ), res.err
    assert not out.exists(), list(out.iterdir())  # no restore point, no recorded hash
    assert res.out == ""


def test_verify_repo_counts_what_it_checked(env, repo):
    manifests = list(repo.glob("*/runs/*/MANIFEST.sha256"))
    assert len(manifests) == 2
    files = sum(len(m.read_text().splitlines()) for m in manifests)
    res = run(env, "verify", "--repo", str(repo))
    assert res.code == 0, res
    assert res.err.strip() == f"{repo}: ok ({files} files, 2 disks)", res
    assert files >= 2 * 4  # run.json, two disks' data, the .vmx at least, in each run
