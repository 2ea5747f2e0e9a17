"""The VMDK readers nobody here wrote, as test helpers: qemu-img and dissect.hypervisor.

dissect.hypervisor is AGPL-3.0: a test-only dependency (setup.cfg's ``test`` extra), imported
here and only here, never from ``vcbproxy/`` or ``vcblab/``.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

CHUNK = 4 << 20


def qemu_compare(image: Path, raw: Path) -> None:
    """``qemu-img compare`` of a VMDK (and the chain below it) with a raw image: equal."""
    proc = subprocess.run(
        ["qemu-img", "compare", "-f", "vmdk", "-F", "raw", str(image), str(raw)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"qemu-img compare {image} {raw}: {proc.stdout}{proc.stderr}"


def qemu_check(image: Path) -> None:
    proc = subprocess.run(["qemu-img", "check", str(image)], capture_output=True, text=True)
    # 63: the format has no consistency checks (a flat layer on top): not a failure
    assert proc.returncode in (0, 63), proc.stdout + proc.stderr


def qemu_backing_chain(image: Path) -> list[str]:
    """File names of the chain as qemu-img opens it, top first."""
    import json

    proc = subprocess.run(
        ["qemu-img", "info", "--output=json", "--backing-chain", str(image)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [Path(i["filename"]).name for i in json.loads(proc.stdout)]


def dissect_sha256(image: Path) -> str:
    """SHA-256 of the virtual disk as dissect.hypervisor reads ``image`` and its parents."""
    from dissect.hypervisor.disk.vmdk import VMDK

    digest = hashlib.sha256()
    with open(image, "rb") as fh:
        disk = VMDK(fh)
        left = disk.size
        disk.seek(0)
        while left:
            block = disk.read(min(CHUNK, left))
            assert block, f"dissect.hypervisor: {image} ends {left} bytes early"
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()
