"""``verify`` on synthetic export directories: VMDKs written by qemu-img (an independent
writer), manifest/catalog by our staging functions, then damaged the ways backups break."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vcbproxy import errors
from vcbproxy.jobs.verify import verify_export, verify_repository
from vcbproxy.staging.catalog import write_catalog
from vcbproxy.staging.exportdir import INCOMPLETE_MARKER
from vcbproxy.staging.manifest import MANIFEST, read_manifest, sha256_file, write_manifest

pytestmark = pytest.mark.usefixtures("qemu_img")

ROOT = Path(__file__).resolve().parents[2]
CAPACITY = 4 << 20
SUBFORMATS = {
    "2gbsparse": "twoGbMaxExtentSparse",
    "monolithic": "monolithicSparse",
    "flat": "monolithicFlat",
    "stream": "streamOptimized",
}


def _raw_disk(path: Path) -> bytes:
    """A disk with data at the start, a hole, and data up to the very end."""
    data = bytearray(CAPACITY)
    data[0:65536] = os.urandom(65536)
    data[CAPACITY - 131072 :] = os.urandom(131072)
    path.write_bytes(bytes(data))
    return bytes(data)


def make_export(directory: Path, fmt: str = "2gbsparse", vm: str = "web01") -> dict:
    directory.mkdir(parents=True)
    raw = directory.parent / f"{directory.name}.raw"
    content = _raw_disk(raw)
    disk = f"scsi0-0-{vm}.vmdk"
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            f"subformat={SUBFORMATS[fmt]}",
            str(raw),
            str(directory / disk),
        ],
        check=True,
    )
    raw.unlink()
    files = sorted(p.name for p in directory.iterdir())
    files.remove(disk)
    files.insert(0, disk)
    (directory / f"{vm}.vmx").write_text(
        '.encoding = "UTF-8"\ndisplayName = "web01"\nscsi0:0.present = "TRUE"\n'
        f'scsi0:0.fileName = "{disk}"\n'
    )
    (directory / f"{vm}.nvram").write_bytes(os.urandom(1024))
    (directory / "vcbproxy.log").write_text("export log\n")
    write_catalog(
        directory,
        {
            "version": "vcbproxy-test",
            "state": "full",
            "display name": vm,
            "uuid": "4201-abcd",
            "config.vmx": f'"[ds1] {vm}/{vm}.vmx"',
            "config.vmxfile": f"{vm}.vmx",
            "disk.scsi0:0.filename": disk,
        },
    )
    meta = {
        "format": "vcbproxy-export/1",
        "vm": {"name": vm, "uuid": "4201-abcd"},
        "format_written": fmt,
        "disks": [
            {
                "device": "scsi0:0",
                "label": "Hard disk 1",
                "capacity": CAPACITY,
                "files": files,
                "content_sha256": hashlib.sha256(content).hexdigest(),
            }
        ],
    }
    (directory / "vcbproxy.json").write_text(json.dumps(meta, indent=2))
    write_manifest(directory)
    return {"disk": disk, "files": files, "extent": files[-1]}


@pytest.fixture(params=list(SUBFORMATS))
def export(request, tmp_path):
    directory = tmp_path / "web01-fullVM"
    info = make_export(directory, request.param)
    info["dir"] = directory
    info["fmt"] = request.param
    return info


def test_clean_export_verifies(export):
    report = verify_export(export["dir"])
    assert report.problems == []
    assert report.checked_disks == 1 and report.qemu_img


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def test_flipped_byte_in_disk_data_is_named(export):
    extent = export["dir"] / export["extent"]
    _flip(
        extent,
        extent.stat().st_size - 1000 if export["fmt"] != "stream" else extent.stat().st_size // 2,
    )
    problems = verify_export(export["dir"]).problems
    assert f"changed: {export['extent']}" in problems


def test_flipped_byte_with_manifest_rewritten_is_caught_by_content_hash(export):
    # Whoever damaged the disk also "fixed" the manifest: the disk itself still tells.
    extent = export["dir"] / export["extent"]
    size = extent.stat().st_size
    _flip(extent, size - 1000 if export["fmt"] != "stream" else size // 2)
    write_manifest(export["dir"])
    problems = verify_export(export["dir"]).problems
    if export["fmt"] == "stream":
        # Compressed grains: the flip is a decompression error or different content.
        assert any(p.startswith(("malformed:", f"changed: {export['disk']}")) for p in problems), (
            problems
        )
    else:
        assert any(
            p.startswith(f"changed: {export['disk']}") and "content" in p for p in problems
        ), problems


@pytest.mark.parametrize("victim", ["disk", "extent", "vcbproxy.json", "catalog", "web01.nvram"])
def test_deleted_file_is_named(export, victim):
    name = export.get(victim, victim)
    (export["dir"] / name).unlink()
    problems = verify_export(export["dir"]).problems
    assert f"missing: {name}" in problems


def test_truncated_extent_is_reported_beyond_the_manifest(export):
    extent = export["dir"] / export["extent"]
    os.truncate(extent, extent.stat().st_size // 2)
    problems = verify_export(export["dir"]).problems
    assert f"changed: {export['extent']}" in problems
    # Our own reader (or qemu-img) sees the damage too, not only the hash.
    assert any(
        p.startswith(("truncated:", "malformed:", f"changed: {export['disk']} (virtual"))
        for p in problems
    ), problems


def test_tampered_manifest_hash(export):
    manifest = export["dir"] / MANIFEST
    entries = read_manifest(manifest)
    entries["web01.nvram"] = "0" * 64
    write_manifest(export["dir"], entries)
    assert verify_export(export["dir"]).problems == ["changed: web01.nvram"]


def test_manifest_line_removed_makes_file_unlisted(export):
    entries = read_manifest(export["dir"] / MANIFEST)
    del entries["vcbproxy.log"]
    write_manifest(export["dir"], entries)
    assert verify_export(export["dir"]).problems == ["unlisted: vcbproxy.log"]


def test_garbled_manifest_is_reported(export):
    (export["dir"] / MANIFEST).write_text("not a manifest line\n")
    problems = verify_export(export["dir"]).problems
    assert problems and problems[0].startswith(f"corrupt: {MANIFEST}")


def test_extra_file_is_unlisted(export):
    (export["dir"] / "intruder.bin").write_bytes(b"x")
    assert verify_export(export["dir"]).problems == ["unlisted: intruder.bin"]


def test_incomplete_export_is_reported(export):
    (export["dir"] / INCOMPLETE_MARKER).write_text("{}\n")
    problems = verify_export(export["dir"]).problems
    assert problems == ["incomplete: web01-fullVM (the export did not finish)"]


def test_catalog_disagreeing_with_metadata(tmp_path):
    directory = tmp_path / "e"
    info = make_export(directory, "flat")
    write_catalog(
        directory,
        {
            "display name": "other",
            "uuid": "4201-abcd",
            "config.vmxfile": "web01.vmx",
            "disk.scsi0:0.filename": "nope.vmdk",
        },
    )
    write_manifest(directory)
    problems = verify_export(directory).problems
    assert "mismatch: catalog (display name 'other', vcbproxy.json says 'web01')" in problems
    assert f"mismatch: catalog (disk.scsi0:0.filename is not {info['disk']!r})" in problems


def test_vmx_not_naming_the_disk(tmp_path):
    directory = tmp_path / "e"
    make_export(directory, "flat")
    (directory / "web01.vmx").write_text('scsi0:0.fileName = "elsewhere.vmdk"\n')
    write_manifest(directory)
    assert verify_export(directory).problems == [
        "mismatch: web01.vmx (scsi0:0.fileName is not 'scsi0-0-web01.vmdk')"
    ]


def test_metadata_naming_a_path_outside_is_unsafe(tmp_path):
    directory = tmp_path / "e"
    make_export(directory, "flat")
    meta = json.loads((directory / "vcbproxy.json").read_text())
    meta["disks"][0]["files"] = ["../../etc/passwd"]
    (directory / "vcbproxy.json").write_text(json.dumps(meta))
    write_manifest(directory)
    problems = verify_export(directory).problems
    assert any(p.startswith("unsafe: vcbproxy.json") for p in problems), problems


def test_multi_vm_mount_directory_verifies_each_export(tmp_path):
    make_export(tmp_path / "all" / "web01-fullVM", "flat", vm="web01")
    info = make_export(tmp_path / "all" / "db01-fullVM", "flat", vm="db01")
    report = verify_export(tmp_path / "all")
    assert report.ok and report.checked_disks == 2
    (tmp_path / "all" / "db01-fullVM" / info["extent"]).unlink()
    assert verify_export(tmp_path / "all").problems == [f"db01-fullVM/missing: {info['extent']}"]


def test_not_a_directory_is_a_usage_error(tmp_path):
    with pytest.raises(errors.UsageError):
        verify_export(tmp_path / "absent")


def test_repository_verify_refuses_a_directory_that_is_no_repository(tmp_path):
    with pytest.raises(errors.NotFoundError):
        verify_repository(tmp_path)


def test_repository_verify_empty_repository_is_ok(tmp_path):
    from vcbproxy.repository.store import Repository

    Repository.open(tmp_path / "repo", create=True)
    assert verify_repository(tmp_path / "repo").ok


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vcbproxy", "verify", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_cli_exit_codes_and_json(tmp_path):
    directory = tmp_path / "e"
    info = make_export(directory, "2gbsparse")
    ok = _cli(str(directory))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == ""
    _flip(directory / info["extent"], (directory / info["extent"]).stat().st_size - 1000)
    bad = _cli(str(directory))
    assert bad.returncode == errors.VERIFY, bad.stderr
    assert f"changed: {info['extent']}" in bad.stdout.splitlines()
    assert "Traceback" not in bad.stderr
    as_json = _cli("--json", str(directory))
    assert as_json.returncode == errors.VERIFY
    doc = json.loads(as_json.stdout)
    assert doc["ok"] is False and f"changed: {info['extent']}" in doc["problems"]
    repo = _cli("--repo", str(tmp_path))
    assert repo.returncode == errors.NOT_FOUND and "Traceback" not in repo.stderr


def test_sha256_of_sparse_matches_independent(tmp_path):
    # Guard for the fixture itself: the manifest hashes what sha256sum would.
    directory = tmp_path / "e"
    info = make_export(directory, "flat")
    path = directory / info["extent"]
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
