"""SAN mode: read the datastore's files straight off storage the proxy can see.

A datastore (by name, or by its ``ds:///vmfs/volumes/<uuid>/`` URL) is mapped to a
local directory: a VMFS LUN mounted read-only with vmfs6-fuse, an NFS export, or the
lab's datastore directory. Nothing goes through the host, which is VCB's point.

Beyond ``RandomAccess`` a SAN file offers (see ``vcbproxy.transport.base``):
``holes_known``/``data_ranges`` so the copier never reads holes, and ``copy_to_fd``
so data moves with ``copy_file_range`` inside the kernel.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from vcbproxy import errors
from vcbproxy.models import DatastorePath
from vcbproxy.transport.base import Transport
from vcbproxy.transport.options import SanOptions
from vcbproxy.vmdk.io import data_ranges, pread_full

log = logging.getLogger(__name__)

CHUNK = 1 << 20
COPY_CHUNK = 256 << 20  # per copy_file_range call: big, but lets Ctrl-C in between
# copy_file_range refuses some file pairs (across filesystems on old kernels, FUSE, pipes):
_NO_KERNEL_COPY = {
    errno.EXDEV,
    errno.EINVAL,
    errno.ENOSYS,
    errno.EOPNOTSUPP,
    errno.EBADF,
    errno.EPERM,
    errno.ETXTBSY,
}


def _normalise_url(url: str) -> str:
    return url.rstrip("/").lower()


class SanFile:
    """A read-only local file; positionless reads, so threads may share it."""

    holes_known = True

    def __init__(self, transport: SanTransport, location: DatastorePath, path: Path):
        self._stats = transport.stats
        self.location = location
        self.path = path
        self.fd = _open_readonly(path, location)
        try:
            self.size = os.fstat(self.fd).st_size
        except OSError:
            os.close(self.fd)
            raise

    def __repr__(self) -> str:
        return f"SanFile({self.location} at {self.path}, size={self.size})"

    def _read_error(self, offset: int, exc: OSError) -> errors.TransportError:
        return errors.TransportError(
            f"reading {self.location} ({self.path}) at offset {offset}: {exc.strerror or exc}"
        )

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        started = time.monotonic()
        try:
            data = pread_full(self.fd, offset, length)  # short reads happen (FUSE)
        except OSError as exc:
            raise self._read_error(offset, exc) from exc
        self._stats.add(bytes_read=len(data), requests=1, seconds=time.monotonic() - started)
        return data

    def stream(self, offset: int, length: int, chunk: int = CHUNK) -> Iterator[bytes]:
        if offset < 0 or length < 0:
            raise ValueError(f"bad range {offset}+{length}")
        end = min(offset + length, self.size)
        return self._stream(offset, end, max(1, chunk))

    def _stream(self, pos: int, end: int, chunk: int) -> Iterator[bytes]:
        if pos < end:
            # Readahead for the whole range: storage reads ahead while we hash and write.
            try:
                os.posix_fadvise(self.fd, pos, end - pos, os.POSIX_FADV_SEQUENTIAL)
            except OSError:
                pass
        self._stats.add(requests=1)
        while pos < end:
            started = time.monotonic()
            try:
                data = os.pread(self.fd, min(chunk, end - pos), pos)
            except OSError as exc:
                raise self._read_error(pos, exc) from exc
            if not data:
                raise errors.TransportError(
                    f"{self.location} ({self.path}) ended at {pos}, before {end}: "
                    f"it shrank while being read"
                )
            pos += len(data)
            self._stats.add(bytes_read=len(data), seconds=time.monotonic() - started)
            yield data

    def data_ranges(self, offset: int = 0, length: int | None = None) -> Iterator[tuple[int, int]]:
        """(offset, length) of the parts of [offset, offset+length) that hold data (holes read
        as zeros, so skipping them loses nothing)."""
        end = self.size if length is None else min(self.size, offset + length)
        try:
            yield from data_ranges(self.fd, offset, end)
        except OSError as exc:
            raise self._read_error(offset, exc) from exc

    def copy_to_fd(self, dst_fd: int, offset: int, length: int, dst_offset: int) -> int:
        """Copy a range into ``dst_fd`` at ``dst_offset``, in the kernel where it can.

        Returns the bytes copied (less than ``length`` only at EOF).
        """
        end = min(offset + length, self.size)
        pos, out = offset, dst_offset
        started = time.monotonic()
        kernel = True
        try:
            while pos < end:
                n = min(COPY_CHUNK, end - pos)
                if kernel:
                    try:
                        done = os.copy_file_range(self.fd, dst_fd, n, pos, out)
                    except OSError as exc:
                        if exc.errno not in _NO_KERNEL_COPY:
                            raise
                        log.debug("copy_file_range not usable for %s: %s", self.path, exc)
                        kernel = False
                        continue
                else:
                    data = os.pread(self.fd, min(n, CHUNK), pos)
                    done = 0
                    view = memoryview(data)
                    while done < len(data):
                        done += os.pwrite(dst_fd, view[done:], out + done)
                if done == 0:
                    break
                pos += done
                out += done
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise  # the staging side is full: the disk writer says so (exit 14), not a read error
            raise self._read_error(pos, exc) from exc
        copied = pos - offset
        self._stats.add(bytes_read=copied, requests=1, seconds=time.monotonic() - started)
        return copied

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_readonly(path: Path, location: DatastorePath) -> int:
    flags = os.O_RDONLY | os.O_CLOEXEC
    try:
        try:
            # O_NOATIME: reading a backup must not write to the datastore (atime updates);
            # only the owner or CAP_FOWNER may ask for it.
            return os.open(path, flags | getattr(os, "O_NOATIME", 0))
        except PermissionError:
            return os.open(path, flags)
    except FileNotFoundError as exc:
        raise errors.NotFoundError(f"{location} not found at {path} (SAN mode)") from exc
    except IsADirectoryError as exc:
        raise errors.TransportError(f"{location} at {path} is a directory") from exc
    except OSError as exc:
        raise errors.TransportError(f"cannot open {location} at {path}: {exc.strerror}") from exc


class SanTransport(Transport):
    """Direct storage access through ``SanOptions.san_map``; ``datastore_urls`` (name -> URL,
    from the server) resolves the datastores mapped by URL."""

    name = "san"

    def __init__(
        self, *, options: SanOptions, datastore_urls: Mapping[str, str] | None = None
    ) -> None:
        super().__init__()
        self.options = options
        self._by_name: dict[str, Path] = {}
        self._by_url: dict[str, Path] = {}
        for key, local in options.san_map.items():
            target = Path(local).expanduser()
            if "://" in key:
                self._by_url[_normalise_url(key)] = target
            else:
                self._by_name[key] = target
        self._urls = {name: _normalise_url(url) for name, url in (datastore_urls or {}).items()}

    def root_of(self, datastore: str) -> Path:
        """The local directory holding ``datastore``; TransportError when unmapped."""
        root = self._by_name.get(datastore)
        if root is None and datastore in self._urls:
            root = self._by_url.get(self._urls[datastore])
        if root is None:
            raise errors.TransportError(
                f"datastore '{datastore}' is not mapped for SAN mode; "
                f"give --san-map {datastore}=/path"
            )
        if not root.is_dir():
            raise errors.TransportError(
                f"SAN mapping of datastore '{datastore}' points to {root}, which is not a directory"
            )
        return root

    def can_serve(self, file: DatastorePath) -> bool:
        return file.datastore in self._by_name or (
            file.datastore in self._urls and self._urls[file.datastore] in self._by_url
        )

    def local_path(self, file: DatastorePath) -> Path:
        root = self.root_of(file.datastore).resolve()
        # resolve() follows symlinks too: a link inside the datastore pointing out is refused.
        path = (root / file.path.lstrip("/")).resolve()
        if path != root and root not in path.parents:
            raise errors.TransportError(
                f"{file} resolves to {path}, outside the SAN mapping {root} of "
                f"datastore '{file.datastore}'"
            )
        return path

    def open(self, *, file: DatastorePath) -> SanFile:
        return SanFile(self, file, self.local_path(file))
