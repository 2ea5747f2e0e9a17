"""Extents of one disk in one run: what changed, as data stored back to back or as zeros.

An incremental must say that an area became zeros as much as that it got new data, so a
run's disk entry lists ``[offset, length, "d"|"z"]`` in disk order; "d" extents are stored
one after another in the disk's ``.data`` file, "z" extents take no space.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
from pathlib import Path

from vcbproxy.errors import VerifyError
from vcbproxy.staging.atomic import AtomicFile
from vcbproxy.vmdk.sparse import is_zero

DATA, ZERO = "d", "z"


class ExtentWriter:
    def __init__(self, path: Path):
        self.file = AtomicFile(path)
        self.name = Path(path).name
        self.extents: list[list] = []
        self.data_bytes = 0
        self.zero_bytes = 0

    def data(self, offset: int, chunk: bytes) -> None:
        if is_zero(chunk):  # any() would walk the bytes in Python: ~170x slower
            return self.zeros(offset, len(chunk))
        self.file.write(chunk)
        self._add(offset, len(chunk), DATA)
        self.data_bytes += len(chunk)

    def zeros(self, offset: int, length: int) -> None:
        self._add(offset, length, ZERO)
        self.zero_bytes += length

    def _add(self, offset: int, length: int, kind: str) -> None:
        last = self.extents[-1] if self.extents else None
        if last and last[2] == kind and last[0] + last[1] == offset:
            last[1] += length
        else:
            self.extents.append([offset, length, kind])

    def commit(self) -> dict:
        sha = self.file.commit()
        return {
            "data": self.name,
            "data_sha256": sha,
            "data_bytes": self.data_bytes,
            "zero_bytes": self.zero_bytes,
            "extents": self.extents,
        }

    def abort(self) -> None:
        self.file.abort()


def apply_extents(run_dir: Path, entry: dict, fd: int, *, chunk: int = 4 << 20) -> None:
    """Write one run's extents of a disk into the raw image open as ``fd``.

    The data file is hashed as its extents are read, and must end where the extent map does
    and match the run's ``data_sha256``: a damaged repository fails the rebuild (exit 16)
    instead of giving a restore point whose recorded hash is the damage's."""
    zero = bytes(min(chunk, 1 << 20))
    name = f"{Path(run_dir).name}/{entry['data']}"
    digest = hashlib.sha256()
    try:
        data = open(Path(run_dir) / entry["data"], "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise VerifyError(f"{name}: cannot read the run's data: {exc.strerror or exc}") from exc
    with data:
        for offset, length, kind in entry["extents"]:
            if kind == ZERO:
                _punch(fd, offset, length, zero)
                continue
            pos = offset
            left = length
            while left:
                block = data.read(min(chunk, left))
                if not block:
                    raise VerifyError(f"{name} is shorter than its extent map")
                digest.update(block)
                os.pwrite(fd, block, pos)
                pos += len(block)
                left -= len(block)
        if data.read(1):
            raise VerifyError(f"{name} is longer than its extent map")
    expected = entry.get("data_sha256")
    if expected and digest.hexdigest() != expected:
        raise VerifyError(
            f"{name}: sha256 {digest.hexdigest()} is not the {expected} the run recorded; "
            f"the repository is damaged ('vcbproxy verify --repo' lists what)"
        )


def _punch(fd: int, offset: int, length: int, zero: bytes) -> None:
    try:
        _fallocate_punch(fd, offset, length)  # the zeros cost no space
    except OSError:
        while length:  # a file system without hole punching
            n = min(length, len(zero))
            os.pwrite(fd, zero[:n], offset)
            offset += n
            length -= n


_libc = None


def _fallocate_punch(fd: int, offset: int, length: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc = _libc
    mode = 0x02 | 0x01  # PUNCH_HOLE | KEEP_SIZE
    if libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
