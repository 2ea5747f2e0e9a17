"""vcbproxy verify on real exports from the lab: a clean export verifies; each kind of damage
is reported by file name with exit 16."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.cli import run
from tests.e2e.oracle import metadata
from vcbproxy.staging.manifest import write_manifest

FORMATS = ["2gbsparse", "monolithic", "flat", "stream"]


@pytest.fixture(scope="module")
def exports(lab, tmp_path_factory) -> dict[str, Path]:
    from tests.e2e.cli import cli_env

    env = cli_env(lab.info)
    root = tmp_path_factory.mktemp("verify")
    out = {}
    for fmt in FORMATS:
        target = root / fmt
        res = run(env, "mount", "-a", "name:files01", "-r", str(target), "--format", fmt, "-q")
        assert res.code == 0, res
        out[fmt] = target
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("fmt", FORMATS)
def test_fresh_export_verifies(env, exports, fmt):
    res = run(env, "verify", str(exports[fmt]))
    assert res.code == 0, res
    assert res.out == ""
    doc = json.loads(run(env, "verify", "--json", str(exports[fmt])).out)
    assert doc["ok"] and doc["checked_disks"] >= 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_damage_is_named(env, exports, tmp_path, fmt):
    src = exports[fmt]
    extent_name = metadata(src)["disks"][0]["files"][-1]

    flipped = _copy(src, tmp_path / "flip")
    extent = flipped / extent_name
    with open(extent, "r+b") as f:
        f.seek(extent.stat().st_size - 700)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x80]))
    res = run(env, "verify", str(flipped))
    assert res.code == 16 and f"changed: {extent_name}" in res.out.splitlines(), res

    deleted = _copy(src, tmp_path / "del")
    (deleted / extent_name).unlink()
    res = run(env, "verify", str(deleted))
    assert res.code == 16 and f"missing: {extent_name}" in res.out.splitlines(), res

    truncated = _copy(src, tmp_path / "trunc")
    os.truncate(truncated / extent_name, (truncated / extent_name).stat().st_size // 2)
    res = run(env, "verify", str(truncated))
    assert res.code == 16 and extent_name in res.out, res

    tampered = _copy(src, tmp_path / "manifest")
    manifest = tampered / "MANIFEST.sha256"
    lines = manifest.read_text().splitlines()
    lines = [("0" * 64 + line[64:]) if line.endswith("  vcbproxy.json") else line for line in lines]
    manifest.write_text("\n".join(lines) + "\n")
    res = run(env, "verify", str(tampered))
    assert res.code == 16 and "changed: vcbproxy.json" in res.out.splitlines(), res


@pytest.mark.parametrize("fmt", ["2gbsparse", "monolithic", "flat"])
def test_flipped_byte_with_manifest_rewritten_is_caught_by_the_content_hash(
    env, exports, tmp_path, fmt
):
    src = exports[fmt]
    disk = metadata(src)["disks"][0]
    forged = _copy(src, tmp_path / "forged")
    extent = forged / disk["files"][-1]
    with open(extent, "r+b") as f:
        f.seek(extent.stat().st_size - 700)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x80]))
    write_manifest(forged)
    res = run(env, "verify", str(forged))
    assert res.code == 16, res
    assert any(line.startswith(f"changed: {disk['files'][0]}") for line in res.out.splitlines()), (
        res
    )
