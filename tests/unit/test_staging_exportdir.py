"""Export directory lifecycle: the PREEXISTING_MOUNTPOINT policy, safe files, completion, removal."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vcbproxy import errors
from vcbproxy.staging.exportdir import INCOMPLETE_MARKER, ExportDir


def test_prepare_creates_0750_and_marks_incomplete(tmp_path):
    d = ExportDir.prepare(tmp_path / "staging" / "web01-fullVM")
    assert d.path.is_dir()
    assert stat.S_IMODE(d.path.stat().st_mode) == 0o750
    assert (d.path / INCOMPLETE_MARKER).exists() and not d.is_complete
    d.file("vcbproxy.json").write_text("{}")
    d.complete()
    assert d.is_complete
    assert sorted(os.listdir(d.path)) == ["vcbproxy.json"]


def test_prepare_accepts_an_empty_existing_directory(tmp_path):
    (tmp_path / "dir").mkdir()
    assert ExportDir.prepare(tmp_path / "dir").path == tmp_path / "dir"


def test_fail_policy_names_the_option(tmp_path):
    d = ExportDir.prepare(tmp_path / "dir")
    d.complete()
    (d.path / "catalog").write_text("state= full\n")
    with pytest.raises(errors.StagingError, match="--preexisting-mountpoint delete") as info:
        ExportDir.prepare(tmp_path / "dir")
    assert info.value.exit_code == errors.STAGING
    assert (d.path / "catalog").exists()


def test_delete_policy_replaces_a_previous_export(tmp_path):
    for marker in ["vcbproxy.json", "catalog", INCOMPLETE_MARKER]:
        target = tmp_path / marker.strip(".")
        target.mkdir()
        (target / marker).write_text("x")
        (target / "old.vmdk").write_bytes(b"old")
        d = ExportDir.prepare(target, preexisting="delete")
        assert sorted(os.listdir(d.path)) == [INCOMPLETE_MARKER]


def test_delete_policy_refuses_foreign_directories(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious")
    with pytest.raises(errors.StagingError, match="not a vcbproxy export"):
        ExportDir.prepare(home, preexisting="delete")
    assert (home / "thesis.tex").read_text() == "precious"


def test_prepare_refuses_files_symlinks_and_bad_policies(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(errors.StagingError, match="not a directory"):
        ExportDir.prepare(tmp_path / "file")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(errors.StagingError, match="symbolic link"):
        ExportDir.prepare(tmp_path / "link", preexisting="delete")
    with pytest.raises(errors.StagingError, match="fail, delete"):
        ExportDir.prepare(tmp_path / "new", preexisting="overwrite")


def test_file_refuses_unsafe_names_and_symlink_escapes(tmp_path):
    d = ExportDir.prepare(tmp_path / "exp")
    assert d.file("web01.vmx") == d.path.resolve() / "web01.vmx"
    for bad in ["../../etc/passwd", "a/b", "..", "", "x\x00"]:
        with pytest.raises(errors.StagingError):
            d.file(bad)
    outside = tmp_path / "outside"
    outside.mkdir()
    (d.path / "evil.vmx").symlink_to(outside / "evil.vmx")
    with pytest.raises(errors.StagingError, match="outside the staging directory"):
        d.file("evil.vmx")


def test_remove_is_idempotent_and_does_not_follow_symlinks(tmp_path):
    d = ExportDir.prepare(tmp_path / "exp")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (d.path / "link").symlink_to(outside)
    (d.path / "sub").mkdir()
    (d.path / "sub" / "disk.vmdk").write_bytes(b"d")
    assert ExportDir.remove(d.path) is True
    assert not d.path.exists()
    assert (outside / "keep").read_text() == "keep"
    assert ExportDir.remove(d.path) is False


def test_remove_refuses_what_is_not_ours(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "data").write_text("x")
    with pytest.raises(errors.StagingError, match="not removing it"):
        ExportDir.remove(other)
    assert (other / "data").exists()
    (tmp_path / "link").symlink_to(other)
    with pytest.raises(errors.StagingError, match="symbolic link"):
        ExportDir.remove(tmp_path / "link")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ExportDir.remove(empty) is True


def test_a_relative_export_directory_names_its_files_once(tmp_path, monkeypatch):
    # "out/web01" joined to itself once gave out/web01/out/web01/<file> (issue 14, item 5).
    monkeypatch.chdir(tmp_path)
    d = ExportDir.prepare(Path("out") / "web01")
    target = d.file("web01.vmx")
    assert target == tmp_path / "out" / "web01" / "web01.vmx"
    target.write_text("config.version = 8\n")
    assert ExportDir.remove(Path("out") / "web01") and not (tmp_path / "out" / "web01").exists()
