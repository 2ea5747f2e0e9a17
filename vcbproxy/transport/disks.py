"""Whole disks of a snapshot, as a transport hands them to the copy.

File modes (nbd, nbdssl, san, ssh and their chains) read a disk as its chain of descriptor
and extent files (``vcbproxy.transport.chain``); NFC receives each disk from the host as one
stream through an export lease (``vcbproxy.transport.nfc``). Behind these two classes the
export job treats both alike: :meth:`Transport.disks_at <vcbproxy.transport.base.Transport.disks_at>`
gives a :class:`SnapshotDisks` for as long as the disks are read, which opens a
:class:`DiskSource` per disk, which writes the disk into the staging directory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vcbproxy.models import DiskInfo
from vcbproxy.vmdk.copy import DiskCopyResult

# (start, length) areas of a disk holding data, or None when they are not known.
Areas = list[tuple[int, int]] | None


@dataclass(frozen=True)
class DiskTarget:
    """Where one disk is staged: ``<directory>/<basename>.vmdk`` (plus extents) in ``fmt``,
    one of ``vcbproxy.vmdk.writers.FORMATS``."""

    fmt: str
    directory: Path
    basename: str
    uuid: str | None = None


class DiskSource(ABC):
    """One disk, opened for copying; ``close`` (or the ``with`` block) releases what it holds."""

    capacity: int  # bytes of the virtual disk

    @abstractmethod
    def copy_to(
        self, target: DiskTarget, *, advance: Callable[[int], None], checksum: bool
    ) -> DiskCopyResult:
        """Write the whole disk as ``target``. On success every file is in place (names in
        ``result.files``, descriptor first); on failure none is left behind. ``advance(n)``
        is called as bytes are done; ``checksum`` hashes the content."""

    def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release connections and files."""

    def __enter__(self) -> DiskSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SnapshotDisks(ABC):
    """The disks of one snapshot, for as long as a transport's ``disks_at`` block lasts."""

    @abstractmethod
    def open(self, disk: DiskInfo, *, label: str, allocated: Callable[[], Areas]) -> DiskSource:
        """``disk``, ready to copy. ``label`` names it in errors ("web01 Hard disk 1");
        ``allocated()`` asks the host which areas hold data, for sources that can skip the
        rest (it costs a call to the host: only sources that use it call it)."""
