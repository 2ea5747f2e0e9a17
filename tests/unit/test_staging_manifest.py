"""MANIFEST.sha256: sha256sum-compatible, hole-aware hashing, and verify catches every kind of tampering."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from vcbproxy import errors
from vcbproxy.staging.exportdir import INCOMPLETE_MARKER
from vcbproxy.staging.manifest import read_manifest, sha256_file, verify_manifest, write_manifest


def _export(tmp_path):
    d = tmp_path / "web01-fullVM"
    d.mkdir()
    (d / "web01.vmx").write_bytes(b'config.version = "8"\n')
    (d / "web01.nvram").write_bytes(os.urandom(8684))
    (d / "scsi0-0-0-web01.vmdk").write_bytes(os.urandom(3 << 20))
    (d / "logs").mkdir()
    (d / "logs" / "vmware.log").write_bytes(b"log\n")
    (d / "name with spaces é.log").write_bytes(b"x")
    return d


def test_manifest_is_sorted_and_sha256sum_checks_it(tmp_path):
    d = _export(tmp_path)
    (d / INCOMPLETE_MARKER).write_text("{}")
    (d / "leftover.partial").write_bytes(b"p")
    path = write_manifest(d)
    lines = path.read_text().splitlines()
    names = [line.split("  ", 1)[1] for line in lines]
    assert names == sorted(names)
    assert (
        "MANIFEST.sha256" not in names
        and INCOMPLETE_MARKER not in names
        and "leftover.partial" not in names
    )
    assert "logs/vmware.log" in names
    # The independent oracle: GNU coreutils.
    run = subprocess.run(
        ["sha256sum", "--strict", "-c", path.name], cwd=d, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(": OK") == 5
    assert verify_manifest(d) == []


def test_backslash_names_are_escaped_as_sha256sum_does(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a\\b").write_bytes(b"1")
    write_manifest(d)
    ours = (d / "MANIFEST.sha256").read_text()
    gnu = subprocess.run(
        ["sha256sum", "a\\b"], cwd=d, capture_output=True, text=True, check=True
    ).stdout
    assert ours == gnu
    assert read_manifest(d / "MANIFEST.sha256") == {"a\\b": hashlib.sha256(b"1").hexdigest()}
    assert verify_manifest(d) == []


def test_verify_detects_flipped_byte_missing_and_extra(tmp_path):
    d = _export(tmp_path)
    write_manifest(d)
    disk = d / "scsi0-0-0-web01.vmdk"
    with open(disk, "r+b") as f:
        f.seek(1 << 20)
        byte = f.read(1)
        f.seek(1 << 20)
        f.write(bytes([byte[0] ^ 0x01]))
    (d / "web01.nvram").unlink()
    (d / "extra.txt").write_text("?")
    assert verify_manifest(d) == [
        "changed: scsi0-0-0-web01.vmdk",
        "missing: web01.nvram",
        "unlisted: extra.txt",
    ]


def test_verify_flags_symlinks_and_escaping_entries(tmp_path):
    d = _export(tmp_path)
    write_manifest(d)
    outside = tmp_path / "outside"
    outside.write_bytes(b'config.version = "8"\n')
    (d / "web01.vmx").unlink()
    (d / "web01.vmx").symlink_to(outside)
    (d / "link").symlink_to(outside)
    with open(d / "MANIFEST.sha256", "a") as f:
        f.write(f"{'0' * 64}  ../outside\n")
    assert verify_manifest(d) == [
        "unsafe: ../outside",
        "changed: web01.vmx (now a symbolic link)",
        "unlisted: link",
    ]


def test_write_refuses_symlinks_in_the_export(tmp_path):
    d = _export(tmp_path)
    (d / "evil").symlink_to("/etc/passwd")
    with pytest.raises(errors.StagingError, match="not a regular file"):
        write_manifest(d)


def test_given_entries_and_validation(tmp_path):
    digest = hashlib.sha256(b"").hexdigest()
    path = write_manifest(tmp_path, {"b": digest, "a": digest.upper()}, name="SUMS")
    assert path.read_text() == f"{digest}  a\n{digest}  b\n"
    with pytest.raises(errors.StagingError, match="not a plain relative path"):
        write_manifest(tmp_path, {"../x": digest})
    with pytest.raises(errors.StagingError, match="no SHA-256"):
        write_manifest(tmp_path, {"x": "abc"})


def test_missing_or_malformed_manifest(tmp_path):
    assert verify_manifest(tmp_path) == ["missing: MANIFEST.sha256"]
    (tmp_path / "MANIFEST.sha256").write_text("not a manifest line\n")
    with pytest.raises(errors.VerifyError, match="line 1") as info:
        verify_manifest(tmp_path)
    assert info.value.exit_code == errors.VERIFY


@pytest.mark.parametrize(
    "layout", ["holes_everywhere", "data_at_end", "all_hole", "empty", "no_holes"]
)
def test_sha256_file_with_holes_equals_plain_hash(tmp_path, layout):
    path = tmp_path / "flat.vmdk"
    with open(path, "wb") as f:
        if layout == "holes_everywhere":
            for offset in (0, 5 << 20, 9 << 20):
                f.seek(offset)
                f.write(os.urandom(70000))
            f.truncate(16 << 20)
        elif layout == "data_at_end":
            f.seek(7 << 20)
            f.write(b"tail")
        elif layout == "all_hole":
            f.truncate(12 << 20)
        elif layout == "no_holes":
            f.write(os.urandom(1 << 20))
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path) == expected
    assert sha256_file(path, bufsize=4096) == expected
    if layout == "all_hole":
        assert os.stat(path).st_blocks == 0  # truly sparse, so the hole path was taken


def test_known_hashes_are_taken_as_given_and_the_rest_hashed(tmp_path):
    d = _export(tmp_path)
    disk = d / "scsi0-0-0-web01.vmdk"
    true_digest = hashlib.sha256(disk.read_bytes()).hexdigest()
    # A known hash is trusted, not recomputed: a deliberately different value shows up as is.
    stand_in = hashlib.sha256(b"computed while writing").hexdigest()
    write_manifest(d, known={"scsi0-0-0-web01.vmdk": stand_in})
    listed = read_manifest(d / "MANIFEST.sha256")
    assert listed["scsi0-0-0-web01.vmdk"] == stand_in
    assert listed["web01.nvram"] == hashlib.sha256((d / "web01.nvram").read_bytes()).hexdigest()
    assert len(listed) == 5
    assert verify_manifest(d) == ["changed: scsi0-0-0-web01.vmdk"]
    # With the right known hash the manifest is the same as hashing everything.
    write_manifest(d, known={"scsi0-0-0-web01.vmdk": true_digest.upper()})
    with_known = (d / "MANIFEST.sha256").read_text()
    write_manifest(d)
    assert (d / "MANIFEST.sha256").read_text() == with_known
    assert verify_manifest(d) == []


def test_a_known_hash_for_a_file_not_in_the_export_is_an_error(tmp_path):
    d = _export(tmp_path)
    with pytest.raises(errors.StagingError, match="gone.vmdk"):
        write_manifest(d, known={"gone.vmdk": "0" * 64})
    assert not (d / "MANIFEST.sha256").exists()


def test_write_and_verify_a_relative_export_directory(tmp_path, monkeypatch):
    # Each file once, not "missing" because the directory was joined to itself (issue 14, item 5).
    _export(tmp_path)
    monkeypatch.chdir(tmp_path)
    d = Path("web01-fullVM")
    write_manifest(d)
    assert len(read_manifest(d / "MANIFEST.sha256")) == 5
    assert verify_manifest(d) == []


def test_verify_names_directories_that_hold_no_file(tmp_path):
    d = _export(tmp_path)
    write_manifest(d)
    (d / "empty" / "deeper").mkdir(parents=True)
    (d / "logs" / "sub").mkdir()
    assert verify_manifest(d) == ["unlisted: empty/", "unlisted: logs/sub/"]
    assert verify_manifest(d, own_dirs=("empty/deeper", "logs/sub")) == []
