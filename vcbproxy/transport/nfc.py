"""NFC mode: disks streamed by the host through an ExportSnapshot lease.

The host sends each disk as one streamOptimized VMDK (compressed grains) over the
lease's device URLs. That is a stream, not random access, and it is the whole
consolidated disk as of the snapshot, never a chain of layers: the export writes it
directly instead of going through ``DiskChain``. Config files (.vmx, .nvram, logs) are
not in the lease; ``open`` serves them over the datastore file service (nbdssl).

The lease (``vcbproxy.vsphere.lease.ExportLease``, opened by :meth:`NfcTransport.disks_at`
through the session) is kept alive with progress calls while grains arrive; the lease's own
``with`` block completes it, or aborts it with the error message.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from vcbproxy import errors
from vcbproxy.models import DatastorePath, DiskInfo, SnapshotRef
from vcbproxy.staging.atomic import AtomicFile
from vcbproxy.transport.base import Lease, RandomAccess, Session, Transport
from vcbproxy.transport.disks import Areas, DiskSource, DiskTarget, SnapshotDisks
from vcbproxy.transport.https import NbdSslTransport, _ConnectionPool
from vcbproxy.transport.options import NfcOptions
from vcbproxy.transport.retry import describe
from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.copy import DiskCopyResult, copy_grains
from vcbproxy.vmdk.stream import iter_stream_optimized
from vcbproxy.vmdk.writers import DiskWriter, open_writer

log = logging.getLogger(__name__)

PROGRESS_EVERY = 2.0  # seconds between lease progress calls (leases expire after minutes)


class _CountingReader:
    """File-like view of a response body that counts bytes and refuses to run short.

    The stream parser asks for a sector, a marker, a grain at a time; the body is fetched
    in blocks of up to READ_BLOCK (``read1``: whatever has arrived, never waiting for a full
    block) and served from a buffer. Each block is also handed, as it arrived, to ``sink``
    (``.write(bytes)``) when one is given: that is how ``--format stream`` stores the
    host's bytes untouched while they are parsed.
    """

    READ_BLOCK = 1 << 20

    def __init__(self, resp: http.client.HTTPResponse, label: str, sink=None):
        self._resp = resp
        self.label = label
        self.sink = sink
        self.bytes = 0
        self._buf = bytearray()
        self._pos = 0
        self._eof = False

    def _fill(self) -> bool:
        """Append the next block of the body to the buffer; False at its end."""
        if self._eof:
            return False
        try:
            data = self._resp.read1(self.READ_BLOCK)
        except (OSError, http.client.HTTPException) as exc:
            raise errors.TransportError(
                f"NFC stream of {self.label} broke after {self.bytes} bytes: {describe(exc)}"
            ) from exc
        if not data:
            self._eof = True
            return False
        self.bytes += len(data)
        if self.sink is not None:
            self.sink.write(data)
        self._buf += data
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            while self._fill():
                pass
            n = len(self._buf) - self._pos
        else:
            while len(self._buf) - self._pos < n and self._fill():
                pass
        data = bytes(self._buf[self._pos : self._pos + n])
        self._pos += len(data)
        if self._pos >= self.READ_BLOCK:  # keep the buffer about one block long
            del self._buf[: self._pos]
            self._pos = 0
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> int:
        """Fetch the rest of the body (so ``sink`` holds all of it); returns the bytes the
        parser had not consumed."""
        while self._fill():
            pass
        rest = len(self._buf) - self._pos
        self._buf, self._pos = bytearray(), 0
        return rest


class NfcDisk:
    """A disk from the lease: ``capacity`` and ``grains()`` → (offset, bytes), in order.

    With ``sink``, every byte of the download is also written to it as it arrives, and the
    stream must be complete (end-of-stream marker) for ``grains()`` to finish cleanly.
    """

    holes_known = True  # only allocated grains are sent

    def __init__(self, transport: NfcTransport, device_url: dict, *, sink=None):
        self._t = transport
        self.device_url = device_url
        self.capacity, self._grains, self._conn = transport.iter_disk(device_url, sink=sink)
        self.size = self.capacity

    def grains(self) -> Iterator[tuple[int, bytes]]:
        return self._grains

    def __iter__(self):
        return self._grains

    def pread(self, offset: int, length: int) -> bytes:
        raise errors.UnsupportedError("an NFC disk is a stream: read it with grains(), not pread")

    def stream(self, offset: int, length: int, chunk: int = 1 << 20):
        raise errors.UnsupportedError("an NFC disk is a stream: read it with grains(), not stream")

    def close(self) -> None:
        # Closing the generator runs its finally only if it ever started; a disk dropped
        # before its first grain (e.g. a capacity mismatch) still holds the connection.
        try:
            close = getattr(self._grains, "close", None)
            if close is not None:
                close()
        finally:
            self._conn.close()


class NfcTransport(Transport):
    name = "nfc"

    def __init__(
        self,
        *,
        session: Session,
        options: NfcOptions,
        lease: Lease | None = None,
        datacenter: str | None = None,
    ) -> None:
        super().__init__()
        self.session = session
        self.options = options
        self.lease = lease
        self.pool = _ConnectionPool(
            ssl_context=session.ssl_context,
            timeout=options.timeout,
            thumbprint=session.thumbprint,
        )
        # .vmx, .nvram and logs are not in the lease: read over nbdssl in the VM's datacenter.
        self._files = NbdSslTransport(session=session, options=options.files, datacenter=datacenter)
        self._files.stats = self.stats
        self._done_disks = 0
        self._last_progress = 0.0

    # -- the lease --------------------------------------------------------------------

    def attach(self, lease: Lease) -> None:
        """Use ``lease`` (an ExportLease, ready) for the disks opened from now on."""
        self.lease = lease
        self._done_disks = 0

    def _url(self, raw: str) -> str:
        # Leases name the host "*" when they do not know the name the client used: that is
        # the endpoint of the session, port included (govmomi does the same), not port 443.
        parts = urlsplit(raw)
        if parts.hostname in ("*", None):
            port = parts.port or self.session.port
            host = self.session.host
            host = f"[{host}]" if ":" in host else host
            parts = parts._replace(netloc=f"{host}:{port}" if port else host)
        return urlunsplit(parts)

    def _progress(self, fraction: float) -> None:
        now = time.monotonic()
        if self.lease is None or now - self._last_progress < PROGRESS_EVERY:
            return
        total = max(1, len(self.lease.device_urls))
        pct = int(min(99, 100 * (self._done_disks + fraction) / total))
        self._last_progress = now
        try:
            self.lease.progress(pct)
        except errors.VcbProxyError as exc:
            log.warning("lease progress call failed: %s", exc)

    def iter_disk(
        self, device_url: dict, *, sink=None
    ) -> tuple[int, Iterator[tuple[int, bytes]], http.client.HTTPConnection]:
        """(capacity, grains, connection) of one lease disk, parsed while it downloads.

        ``sink`` (``.write(bytes)``) receives the raw body as it arrives, all of it once
        ``grains`` is exhausted; the stream must then end with its end-of-stream marker.
        ``grains`` closes the connection when it ends; the caller closes it too, in case
        ``grains`` is never started.
        """
        url = self._url(device_url["url"])
        # "disk" is only a flag; the device key names the disk ("/vm-1/VirtualLsiLogicController0:0").
        label = str(device_url.get("key") or device_url.get("target_id") or url)
        parts = urlsplit(url)
        key = (
            parts.scheme,
            parts.hostname or "",
            parts.port or (443 if parts.scheme == "https" else 80),
        )
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn, resp, cookie = self._get(key, target, label)
        if resp.status == 401 and self._reauthenticate(cookie):
            conn.close()  # the session expired: log in again, and ask once more
            conn, resp, cookie = self._get(key, target, label)
        if resp.status == 401:
            conn.close()
            raise errors.AuthError(f"NFC download of {label}: the session expired (HTTP 401)")
        if resp.status != 200:
            conn.close()
            raise errors.TransportError(
                f"NFC download of {label}: HTTP {resp.status} {resp.reason}"
            )
        self.stats.add(requests=1)
        reader = _CountingReader(resp, label, sink)
        try:
            parsed = iter_stream_optimized(reader, require_end=sink is not None)
        except BaseException:
            conn.close()
            raise
        capacity, grains = parsed if isinstance(parsed, tuple) else (parsed.capacity, iter(parsed))
        return capacity, self._grains(grains, reader, conn, capacity), conn

    def _get(
        self, key: tuple[str, str, int], target: str, label: str
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str]:
        conn, _ = self.pool.acquire(*key)
        cookie = self.session.cookie
        try:
            self.pool.connect(conn)
            conn.request("GET", target, headers={"Cookie": cookie} if cookie else {})
            return conn, conn.getresponse(), cookie
        except errors.VcbProxyError:
            conn.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise errors.TransportError(f"NFC download of {label} failed: {describe(exc)}") from exc

    def _reauthenticate(self, refused_cookie: str) -> bool:
        renew = getattr(self.session, "reauthenticate", None)  # sessions that cannot: no retry
        return renew is not None and renew(refused_cookie) != refused_cookie

    def _grains(self, grains, reader: _CountingReader, conn, capacity: int):
        started = time.monotonic()
        counted = 0
        try:
            for offset, data in grains:
                yield offset, data
                self.stats.add(bytes_read=reader.bytes - counted)
                counted = reader.bytes
                self._progress((offset + len(data)) / capacity if capacity else 1.0)
            if reader.sink is not None:
                trailing = reader.drain()  # nothing, from a well-behaved host
                if trailing:
                    log.info(
                        "NFC stream of %s: %d bytes after the end-of-stream marker, kept",
                        reader.label,
                        trailing,
                    )
            self._done_disks += 1
        finally:
            self.stats.add(bytes_read=reader.bytes - counted, seconds=time.monotonic() - started)
            conn.close()  # the lease URL serves one disk per request; never reused

    # -- Transport --------------------------------------------------------------------

    @contextlib.contextmanager
    def disks_at(self, snapshot: SnapshotRef, disks: Sequence[DiskInfo]) -> Iterator[LeaseDisks]:
        """An ExportSnapshot lease for the block: completed when it ends normally, aborted
        (naming the error) when it ends by an exception."""
        with self.session.export_lease(snapshot) as lease:
            self.attach(lease)
            entries = [entry for entry in lease.device_urls if entry.get("disk")]
            yield LeaseDisks(self, match_lease_disks(disks, entries))

    def open(self, *, file: DatastorePath) -> RandomAccess:
        """A file that is not in the lease (.vmx, .nvram, logs), read over nbdssl; lease
        disks are opened by their device URL with :meth:`open_disk`."""
        return self._files.open(file=file)

    def open_disk(self, device_url: dict, *, sink=None) -> NfcDisk:
        """The lease disk at ``device_url``; ``sink`` gets its raw bytes (see :class:`NfcDisk`)."""
        return NfcDisk(self, device_url, sink=sink)

    def close(self) -> None:
        self.pool.close()
        self._files.close()


def match_lease_disks(disks: Sequence[DiskInfo], entries: list[dict]) -> dict[str, dict]:
    """Map each disk to its lease URL: by device key where the lease names it, else in device order."""
    by_key = {}
    for entry in entries:
        tail = str(entry.get("key", "")).rstrip("/").rsplit("/", 1)[-1]
        if tail.isdigit():
            by_key[int(tail)] = entry
    if all(d.key in by_key for d in disks if not d.independent) and by_key:
        return {d.device_id: by_key[d.key] for d in disks if d.key in by_key}
    if len(entries) != len(disks):
        raise errors.TransportError(
            f"the NFC lease offers {len(entries)} disks but the snapshot has {len(disks)}; use -m nbdssl"
        )
    return {d.device_id: e for d, e in zip(disks, entries, strict=True)}


class LeaseDisks(SnapshotDisks):
    """The disks of a lease: each is streamed whole by the host, only its allocated grains,
    so the allocation map is never asked for."""

    def __init__(self, transport: NfcTransport, entries: dict[str, dict]):
        self.transport = transport
        self.entries = entries  # device id -> device URL

    def open(self, disk: DiskInfo, *, label: str, allocated: Callable[[], Areas]) -> LeaseDisk:
        return LeaseDisk(self.transport, self.entries[disk.device_id], disk, label=label)


class StoredStream:
    """The writer for ``-m nfc --format stream``: the host already sends streamOptimized, so
    its bytes are stored as they arrive (``sink``, fed by the transport) instead of being
    inflated and deflated again. The grains ``copy_grains`` writes here were parsed from
    those same bytes only to hash the content and prove the stream whole; they are dropped.

    The embedded descriptor names the extent as the host chose; a streamOptimized VMDK is a
    single monolithic extent, so readers (qemu-img, ``verify``) use the file itself, and
    the export's .vmx names the file by its staged name."""

    def __init__(self, path: Path):
        self.sink = AtomicFile(path)
        self.name = path.name
        self.sha256 = ""

    def write(self, offset: int, data: bytes) -> None:
        pass

    def close(self) -> list[str]:
        self.sha256 = self.sink.commit()
        return [self.name]

    def abort(self) -> None:
        self.sink.abort()


class LeaseDisk(DiskSource):
    def __init__(self, transport: NfcTransport, entry: dict, disk: DiskInfo, *, label: str):
        self.transport = transport
        self.entry = entry
        self.disk = disk
        self.label = label
        self.capacity = disk.capacity

    def copy_to(
        self, target: DiskTarget, *, advance: Callable[[int], None], checksum: bool
    ) -> DiskCopyResult:
        disk = self.disk
        writer: StoredStream | DiskWriter
        if target.fmt == "stream":
            writer = StoredStream(target.directory / (target.basename + ".vmdk"))
        else:
            writer = open_writer(
                target.fmt, target.directory, target.basename, disk.capacity, uuid=target.uuid
            )
        source = None
        try:
            sink = writer.sink if isinstance(writer, StoredStream) else None
            source = self.transport.open_disk(self.entry, sink=sink)
            if source.capacity != disk.capacity:
                raise errors.TransportError(
                    f"{disk.label}: the NFC stream has {source.capacity} bytes, the disk {disk.capacity}"
                )
            result = copy_grains(
                source.grains(),
                writer,
                capacity=disk.capacity,
                advance=advance,
                checksum=checksum,
            )
            source.close()
            closing = time.monotonic()
            result.files = writer.close()
            result.sync_seconds = time.monotonic() - closing
            if isinstance(writer, StoredStream) and result.content_sha256:
                # the stored bytes were hashed as they arrived
                result.file_sha256[writer.name] = writer.sha256
        except VmdkError as exc:
            writer.abort()
            raise errors.TransportError(
                f"{self.label}: the NFC stream is not a valid streamOptimized VMDK: {exc}"
            ) from exc
        except BaseException:
            writer.abort()
            raise
        finally:
            if source is not None:
                source.close()
        return result
