"""Byte-for-byte checks of an export against the lab's content at the snapshot."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path


def metadata(directory: Path) -> dict:
    return json.loads((directory / "vcbproxy.json").read_text(encoding="utf-8"))


def raw_sha256(vmdk: Path, scratch: Path) -> str:
    """sha256 of the virtual disk as qemu-img reads it (an independent reader of our VMDKs)."""
    raw = scratch / (vmdk.name + ".raw")
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(vmdk), str(raw)], check=True, capture_output=True
    )
    digest = hashlib.sha256()
    with open(raw, "rb") as f:
        for block in iter(lambda: f.read(4 << 20), b""):
            digest.update(block)
    raw.unlink()
    return digest.hexdigest()


def qemu_check(vmdk: Path) -> None:
    proc = subprocess.run(["qemu-img", "check", str(vmdk)], capture_output=True, text=True)
    # Exit 63 means "this format has no consistency checks" (flat extents): not a failure.
    assert proc.returncode in (0, 63), proc.stdout + proc.stderr


def qemu_compare(vmdk: Path, raw: str) -> None:
    proc = subprocess.run(
        ["qemu-img", "compare", "-f", "vmdk", "-F", "raw", str(vmdk), raw],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"qemu-img compare {vmdk} {raw}: {proc.stdout}{proc.stderr}"


def assert_export_matches_lab(directory: Path, lab_client, scratch: Path) -> dict:
    """Every exported disk equals the lab's disk at the export's snapshot: hash and qemu-img compare."""
    meta = metadata(directory)
    snapshot = meta["snapshot"]["moref"]
    checked = 0
    for disk in meta["disks"]:
        if disk.get("skipped"):
            continue
        descriptor = directory / disk["files"][0]
        truth = lab_client.oracle(snapshot=snapshot, key=disk["key"], raw=True)
        assert disk["content_sha256"] == truth["sha256"], disk["device"]
        assert raw_sha256(descriptor, scratch) == truth["sha256"], disk["device"]
        qemu_check(descriptor)
        qemu_compare(descriptor, truth["path"])
        checked += 1
    assert checked, "the export holds no disk"
    return meta


def vcb_snapshots(lab_client, vm: str) -> list:
    return [s for s in lab_client.state(vm)["snapshots"] if s["name"] == "_VCB-BACKUP_"]
