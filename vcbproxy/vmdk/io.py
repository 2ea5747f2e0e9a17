"""Local files as read-only :class:`RandomAccess` objects (the same shape transports hand out)."""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class RandomAccess(Protocol):
    """What the VMDK code needs from a file: its size and ranged reads."""

    size: int

    def pread(self, offset: int, length: int) -> bytes: ...

    def stream(self, offset: int, length: int, chunk: int = 1 << 20) -> Iterator[bytes]: ...

    def close(self) -> None: ...


def pread_full(fd: int, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset``; fewer only at end of file (os.pread may return short)."""
    parts = []
    while length > 0:
        data = os.pread(fd, length, offset)
        if not data:
            break
        parts.append(data)
        offset += len(data)
        length -= len(data)
    return b"".join(parts)


def data_ranges(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of the parts of ``[start, end)`` of a local file that hold data.

    Holes read as zeros, so callers skip them. A file system without SEEK_DATA reports the
    whole range as data, which is still right. Other errors are raised as OSError.
    """
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only holes from here to EOF
                return
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield pos, end - pos
                return
            raise
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, hole - data
        pos = hole


class LocalFile:
    """A local file opened read-only; ``pread`` returns fewer bytes only at end of file.
    It knows its holes (see ``vcbproxy.transport.base``), so readers can skip them."""

    holes_known = True

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def pread(self, offset: int, length: int) -> bytes:
        return pread_full(self._fd, offset, length)

    def stream(self, offset: int, length: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        end = offset + length
        while offset < end:
            data = self.pread(offset, min(chunk, end - offset))
            if not data:
                return
            yield data
            offset += len(data)

    def data_ranges(self, offset: int = 0, length: int | None = None) -> Iterator[tuple[int, int]]:
        end = self.size if length is None else min(self.size, offset + length)
        return data_ranges(self._fd, offset, end)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> LocalFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OpenFiles:
    """Opens each name once through ``opener`` and closes them all together: what the chain
    reader, the copier, verify and restore need, since a disk's layers are read many times."""

    def __init__(self, opener: Callable[[str], RandomAccess]):
        self._opener = opener
        self._opened: dict[str, RandomAccess] = {}

    def open(self, name: str) -> RandomAccess:
        if name not in self._opened:
            self._opened[name] = self._opener(name)
        return self._opened[name]

    def close(self) -> None:
        opened, self._opened = self._opened, {}
        for handle in opened.values():
            handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def local_opener(directory: str | os.PathLike) -> Callable[[str], LocalFile]:
    """``opener(name)`` for :meth:`DiskChain.open`: names are relative to ``directory``.

    Absolute names (a parentFileNameHint such as ``/vmfs/volumes/...``) are opened as given.
    """
    base = Path(directory)

    def opener(name: str) -> LocalFile:
        if posixpath.isabs(name):
            return LocalFile(name)
        return LocalFile(base / name)

    return opener
