"""Converting a staged disk into what a VMFS datastore holds, while uploading it.

A restore reads the staged disk (2gbsparse, monolithic sparse, flat or streamOptimized)
through :func:`vcbproxy.vmdk.content.disk_pieces` and sends a VMFS-style disk: a ``vmfs``
descriptor plus one flat extent. The file service stores what it receives byte for byte,
so the flat extent must carry its full length: holes of the staged disk go out as zeros,
generated on the fly, never buffered (memory stays flat whatever the disk size).
"""

from __future__ import annotations

import hashlib
import posixpath
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vcbproxy import errors
from vcbproxy.models import DatastorePath
from vcbproxy.vmdk.content import disk_pieces
from vcbproxy.vmdk.descriptor import SECTOR, Extent, new_descriptor, render
from vcbproxy.vmdk.io import OpenFiles, local_opener

CHUNK = 1 << 20
_ZEROS = bytes(CHUNK)

# ddb.adapterType for a .vmx virtualDev (the descriptor knows fewer adapter names than the vmx).
_ADAPTERS = {
    "lsilogic": "lsilogic",
    "buslogic": "buslogic",
    "lsisas1068": "lsisas1068",
    "pvscsi": "pvscsi",
}


def adapter_type(vmx: dict[str, str], device: str) -> str:
    """The descriptor's adapter for ``device`` ("scsi0:0") from the VM's parsed .vmx."""
    bus = device.split(":", 1)[0].lower()
    if bus.startswith(("ide", "sata", "nvme")):
        return "ide" if bus.startswith("ide") else "lsilogic"
    return _ADAPTERS.get(vmx.get(f"{bus}.virtualdev", "lsilogic").lower(), "lsilogic")


def flat_name(descriptor: DatastorePath) -> DatastorePath:
    """``[ds] vm/vm.vmdk`` → ``[ds] vm/vm-flat.vmdk`` (the name ESXi gives the extent)."""
    stem = descriptor.path[:-5] if descriptor.path.endswith(".vmdk") else descriptor.path
    return DatastorePath(descriptor.datastore, stem + "-flat.vmdk")


def vmfs_descriptor(
    descriptor: DatastorePath, capacity: int, *, adapter: str, uuid: str | None
) -> bytes:
    """A ``createType="vmfs"`` descriptor naming the flat extent beside it."""
    if capacity % SECTOR:
        raise errors.StagingError(f"disk capacity {capacity} is not a whole number of sectors")
    extent = Extent(
        "RW", capacity // SECTOR, "VMFS", posixpath.basename(flat_name(descriptor).path), 0
    )
    return render(
        new_descriptor("vmfs", [extent], capacity=capacity, uuid=uuid or None, adapter=adapter)
    ).encode("utf-8")


@dataclass
class StagedDisk:
    """A disk of the export: its descriptor name in the export directory and what it must hold."""

    directory: Path
    descriptor: str
    capacity: int
    content_sha256: str = ""


def flat_chunks(pieces, capacity: int, hasher=None) -> Iterator[bytes | memoryview]:
    """The whole virtual disk, front to back, from ``disk_pieces``: data as read, zeros for holes."""
    position = 0
    for offset, piece in pieces:
        if offset != position:
            raise errors.VerifyError(f"disk map jumps from {position} to {offset}")
        if isinstance(piece, int):
            left = piece
            while left:
                zeros = memoryview(_ZEROS)[: min(left, CHUNK)]
                if hasher is not None:
                    hasher.update(zeros)
                yield zeros
                left -= len(zeros)
            position += piece
        else:
            if hasher is not None:
                hasher.update(piece)
            yield piece
            position += len(piece)
    if position != capacity:
        raise errors.VerifyError(f"the disk map covers {position} of {capacity} bytes")


def upload_disk(
    uploader,
    disk: StagedDisk,
    target: DatastorePath,
    *,
    adapter: str,
    uuid: str | None,
    uploaded: list[DatastorePath],
    advance: Callable[[int], None] = lambda n: None,
) -> None:
    """Send ``disk`` as ``target`` (descriptor) + its ``-flat.vmdk``; appends each file once started.

    The flat extent goes first and the descriptor last, so a disk whose descriptor is on
    the datastore is complete. The content hash is checked against the export's record as
    the bytes go out; a mismatch fails the upload before the descriptor is written.
    """
    files = OpenFiles(local_opener(disk.directory))
    extent = flat_name(target)
    hasher = hashlib.sha256()
    try:
        capacity, pieces = disk_pieces(disk.descriptor, files.open)
        if capacity != disk.capacity:
            raise errors.VerifyError(
                f"{disk.descriptor}: capacity {capacity}, the export says {disk.capacity}"
            )
        # Listed before the first byte: a PUT cut halfway may still leave a file behind.
        uploaded.append(extent)
        uploader.put(
            extent, disk.capacity, flat_chunks(pieces, disk.capacity, hasher), advance=advance
        )
    except (ValueError, zlib.error) as exc:  # VmdkError: the staged disk cannot be read
        raise errors.VerifyError(f"{disk.descriptor}: {exc}") from exc
    finally:
        files.close()
    if disk.content_sha256 and hasher.hexdigest() != disk.content_sha256:
        raise errors.VerifyError(
            f"{disk.descriptor}: content changed since the export (sha256 differs)"
        )
    body = vmfs_descriptor(target, disk.capacity, adapter=adapter, uuid=uuid)
    uploaded.append(target)
    uploader.put(target, len(body), [body])
