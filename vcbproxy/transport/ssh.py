"""SSH mode: read datastore files through the ESXi host's shell, as Veeam FastSCP did.

Files live under ``<SshOptions.root>/<datastore>/<path>`` on the host. Each read is one remote
command printing a range (see ``sshstream`` for the readers: a short script for the host's
Python that sends zero blocks as 5-byte records, else ``dd``, else busybox ``tail | head``),
so a dropped connection resumes at the last byte received.

Every remote command costs ~140 ms to start (a shell, login accounting), as much as reading
tens of MiB. So a directory is listed once, and with the host's Python the listing brings
the small files (.vmx, .nvram, descriptors, logs) along; small reads of a VMDK's metadata
are served from a 1 MiB read-ahead window.

Paramiko reads one SSH packet per trip through its Python packet loop, so with the usual
32 KiB packets it reaches about a third of OpenSSH's ``ssh host cat file``. The receiver
chooses the packet size (RFC 4254 5.1), so channels here ask for 256 KiB packets (OpenSSH's
own limit) and a 16 MiB window, and hand packets on without paramiko's copies
(``sshstream.FastPipe``). ``SshOptions.channels > 1`` additionally cuts ranges of at least
``PARALLEL_MIN`` into segments yielded in order, striped over that many connections:
segment k goes to stripe k % channels, and each stripe is ONE remote command that prints
its segments back to back. Per stripe at most one segment waits for the consumer, one is
being read and one window's worth is in flight (the window is the segment size, so the SSH
flow control holds the command back), so a segment is ``BUFFER_BUDGET / (3 * channels + 1)``
(at most ``SEGMENT``): memory stays flat however many channels are asked for. The
connections' packet threads share the GIL, so this only pays on hosts with slow
per-connection links and spare cores; AES-GCM is preferred, which paramiko decrypts
without a separate HMAC pass.

Host keys are checked by ``sshkeys.HostKeyChecker`` (known_hosts, a pinned fingerprint or
accept-new).
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import queue
import shlex
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import paramiko

from vcbproxy import errors
from vcbproxy.models import DatastorePath
from vcbproxy.transport.base import Transport
from vcbproxy.transport.options import SshOptions
from vcbproxy.transport.retry import Backoff, describe
from vcbproxy.transport.sshkeys import HostKeyChecker, fingerprint
from vcbproxy.transport.sshstream import (
    READER_FILE_ERROR,
    READER_SHORT_FILE,
    READERS,
    FastPipe,
    Incoming,
    StreamEnded,
    listing_command,
    parse_listing,
    raw_chunks,
    reader_command,
    record_chunks,
)

log = logging.getLogger(__name__)
# Where paramiko logs for a handshake we abandoned (Ctrl-C): nowhere.
_ABORTED = logging.getLogger(f"{__name__}.aborted")
_ABORTED.addHandler(logging.NullHandler())
_ABORTED.propagate = False

CHUNK = 1 << 20
SEGMENT = 32 << 20  # largest unit of parallel fetches
# Fetched-ahead segments held at once with --ssh-channels > 1, whatever the channel count:
# 4 channels once held 5 x 32 MiB and peaked at 275 MiB RSS.
BUFFER_BUDGET = 64 << 20
PARALLEL_MIN = 128 << 20  # smaller ranges go over one channel
WINDOW = 16 << 20  # SSH flow-control window: deep enough for a loopback/LAN pipe
MAX_PACKET = 256 << 10  # what we accept per packet; 32 KiB costs 3-4x in paramiko
# Small reads (descriptors, sparse headers and grain tables) fetch this much ahead and are
# served from it: a remote command costs as much as reading tens of MiB.
READAHEAD = 1 << 20
# The listing (with the host's Python) brings along every file up to this size, up to this
# much in all: .vmx, .nvram, descriptors and most logs.
LISTED_FILE_MAX = 256 << 10
LISTED_BYTES_MAX = 8 << 20
# Measured here (paramiko 5, cryptography's OpenSSL): GCM needs no separate HMAC pass.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
MACS = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-512",
)


class SshUnreachable(errors.ConnectionFailure):
    """No TCP connection or no SSH handshake: transient, retried with backoff."""


class _Connection:
    """One authenticated SSH connection (its own paramiko packet thread)."""

    def __init__(self, owner: SshTransport):
        o = owner.options
        self.owner = owner
        self.host, self.port = owner.host, o.port
        try:
            sock = socket.create_connection((self.host, self.port), timeout=o.timeout)
        except OSError as exc:
            raise SshUnreachable(
                f"cannot reach SSH on {self.host}:{self.port}: {describe(exc)}"
            ) from exc
        transport: paramiko.Transport | None = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = self.t = paramiko.Transport(
                sock, default_window_size=WINDOW, default_max_packet_size=MAX_PACKET
            )
            security = self.t.get_security_options()
            security.ciphers = _prefer(security.ciphers, CIPHERS)
            security.digests = _prefer(security.digests, MACS)
            self.t.start_client(timeout=o.timeout)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            sock.close()
            raise SshUnreachable(
                f"SSH handshake with {self.host}:{self.port} failed: {describe(exc)}"
            ) from exc
        except BaseException:
            # Ctrl-C while the host has not answered yet: stop paramiko's reader thread too
            # (shut down, so it reads an end of file rather than a closed socket) ...
            if transport is not None:
                # ... and paramiko logs the banner it never got as an error with a traceback
                # whatever the cause: a Ctrl-C is not one, so that goes nowhere.
                transport.set_log_channel(_ABORTED.name)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            if transport is not None:
                transport.close()
            sock.close()
            raise
        try:
            owner.host_keys.check(self.host, self.port, self.t.get_remote_server_key())
            self._authenticate(o)
        except BaseException:
            self.t.close()
            raise
        # remote_cipher: set by paramiko's key exchange, missing from its type stubs
        cipher = getattr(self.t, "remote_cipher", "?")
        log.debug("SSH connection to %s:%d, cipher %s", self.host, self.port, cipher)

    def _authenticate(self, o: SshOptions) -> None:
        tried: list[str] = []
        keys: list[paramiko.PKey] = []
        if o.key:
            try:
                keys.append(paramiko.PKey.from_path(o.key))
            except (OSError, paramiko.SSHException, ValueError) as exc:
                raise errors.AuthError(f"cannot load SSH key {o.key}: {describe(exc)}") from exc
        else:
            try:
                keys.extend(paramiko.Agent().get_keys())
            except paramiko.SSHException:
                pass
        for key in keys:
            try:
                self.t.auth_publickey(o.user, key)
                return
            except paramiko.AuthenticationException:
                tried.append(f"key {fingerprint(key)}")
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise errors.ConnectionFailure(
                    f"SSH authentication with {self.host}:{self.port} broke off: {describe(exc)}"
                ) from exc
        if o.password:
            try:
                self.t.auth_password(o.user, o.password)
                return
            except paramiko.AuthenticationException:
                tried.append("password")
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise errors.ConnectionFailure(
                    f"SSH authentication with {self.host}:{self.port} broke off: {describe(exc)}"
                ) from exc
        raise errors.AuthError(
            f"SSH login as {o.user}@{self.host}:{self.port} refused "
            f"(tried: {', '.join(tried) or 'nothing: give --ssh-key, an agent or a password'})"
        )

    @property
    def alive(self) -> bool:
        return self.t.is_active()

    def exec(self, command: str, window: int = WINDOW) -> paramiko.Channel:
        chan = self.t.open_session(
            window_size=window, max_packet_size=MAX_PACKET, timeout=self.owner.options.timeout
        )
        # Before the command runs, so no data has arrived yet (see sshstream.FastPipe).
        chan.in_buffer = FastPipe()  # type: ignore[assignment]  # a drop-in BufferedPipe
        chan.settimeout(self.owner.options.timeout)
        chan.exec_command(command)
        return chan

    def run(self, command: str) -> tuple[int, bytes, bytes]:
        """Run a small command to completion: (exit status, stdout, stderr)."""
        chan = self.exec(command)
        try:
            out, err = bytearray(), bytearray()
            while True:
                data = chan.recv(65536)
                if not data:
                    break
                out += data
            while True:
                data = chan.recv_stderr(65536)
                if not data:
                    break
                err += data
            return chan.recv_exit_status(), bytes(out), bytes(err)
        finally:
            chan.close()

    def close(self) -> None:
        self.t.close()


def _prefer(available: Sequence[str], wanted: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(w for w in wanted if w in available) + tuple(
        a for a in available if a not in wanted
    )


class SshFile:
    """A file on the host, read with ranged remote commands."""

    holes_known = False

    def __init__(self, transport: SshTransport, location: DatastorePath, remote: str):
        self._t = transport
        self.location = location
        self.remote = remote
        self.size = transport.remote_size(location, remote)
        self._ahead_at = 0
        # Bytes fetched ahead by the last small pread, or the whole file from the listing.
        self._ahead = transport.listed_content(remote) or b""
        if len(self._ahead) != self.size:
            self._ahead = b""

    def __repr__(self) -> str:
        return f"SshFile({self.location} at {self.remote}, size={self.size})"

    def _cached(self, offset: int, end: int) -> bytes | None:
        if self._ahead_at <= offset and end <= self._ahead_at + len(self._ahead):
            return self._ahead[offset - self._ahead_at : end - self._ahead_at]
        return None

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        cached = self._cached(offset, offset + length)
        if cached is not None:
            return cached
        if length >= READAHEAD:
            return b"".join(self._t.fetch(self, offset, offset + length, CHUNK))
        self._ahead = b"".join(
            self._t.fetch(self, offset, min(self.size, offset + READAHEAD), CHUNK)
        )
        self._ahead_at = offset
        return self._ahead[:length]

    def stream(self, offset: int, length: int, chunk: int = CHUNK) -> Iterator[bytes]:
        if offset < 0 or length < 0:
            raise ValueError(f"bad range {offset}+{length}")
        end = min(offset + length, self.size)
        chunk = max(1, chunk)
        cached = self._cached(offset, end)
        if cached is not None and end > offset:
            return iter([cached[i : i + chunk] for i in range(0, len(cached), chunk)])
        if self._t.channels > 1 and end - offset >= PARALLEL_MIN:
            return self._t.fetch_parallel(self, offset, end, chunk)
        return self._t.fetch(self, offset, end, chunk)

    def close(self) -> None:
        """Nothing per file: connections belong to the transport."""


class SshTransport(Transport):
    name = "ssh"
    # A remote command costs ~140 ms to start: about 32 MiB of reading at LAN speed.
    request_cost = 32 << 20

    def __init__(self, *, options: SshOptions) -> None:
        super().__init__()
        self.options = options
        if not options.host:
            raise errors.UsageError("no SSH host: give --ssh-host")
        self.host: str = options.host
        self.channels = max(1, int(options.channels))
        self.root = options.root.rstrip("/") or "/"
        self.host_keys = HostKeyChecker(
            known_hosts=options.known_hosts,
            pinned=options.fingerprint,
            accept_new=options.accept_new,
        )
        self._idle: deque[_Connection] = deque()
        self._all: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None
        # Remote readers still worth trying, best first; the first read that works confirms
        # readers[0] for the rest of the run (see sshstream).
        self._readers = list(
            READERS if options.reader == "auto" else READERS[READERS.index(options.reader) :]
        )
        self._reader_confirmed = False
        self._listed: set[str] = set()  # remote directories whose sizes were listed
        self._sizes: dict[str, int] = {}
        self._contents: dict[str, bytes] = {}  # small files' contents, from the listing

    # -- connections ------------------------------------------------------------------

    def _acquire(self) -> _Connection:
        with self._lock:
            if self._closed:
                raise errors.TransportError("transport already closed")
            while self._idle:
                conn = self._idle.pop()
                if conn.alive:
                    return conn
                conn.close()
        conn = _Connection(self)
        with self._lock:
            self._all.append(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        with self._lock:
            if not self._closed and conn.alive:
                self._idle.append(conn)
                return
        conn.close()

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
            self._idle.clear()
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        for conn in conns:
            conn.close()

    # -- paths and sizes --------------------------------------------------------------

    def remote_path(self, file: DatastorePath) -> str:
        if not file.datastore or "/" in file.datastore or file.datastore in (".", ".."):
            raise errors.TransportError(
                f"datastore name {file.datastore!r} is not usable as a path"
            )
        path = posixpath.normpath(file.path.lstrip("/"))
        if path in (".", "..") or path.startswith("../"):
            raise errors.TransportError(f"{file} leaves the datastore")
        return f"{self.root}/{file.datastore}/{path}"

    def open(self, *, file: DatastorePath) -> SshFile:
        return SshFile(self, file, self.remote_path(file))

    def remote_size(self, location: DatastorePath, remote: str) -> int:
        directory = posixpath.dirname(remote)
        with self._lock:
            listed = directory in self._listed
            self._listed.add(directory)
        if not listed:
            self._sizes.update(self._list_sizes(directory))
        if remote in self._sizes:
            return self._sizes[remote]
        command = f"stat -L -c %s -- {shlex.quote(remote)}"
        status, out, err = self._run_with_retry(command, f"size of {location}")
        if status != 0:
            message = err.decode(errors="replace").strip()
            if "No such file" in message:
                raise errors.NotFoundError(f"{location} not found on {self.host} ({remote})")
            raise errors.TransportError(f"size of {location} on {self.host}: {message or status}")
        try:
            return int(out.strip())
        except ValueError as exc:
            raise errors.TransportError(
                f"size of {location} on {self.host}: unexpected answer {out[:80]!r}"
            ) from exc

    def _list_sizes(self, directory: str) -> dict[str, int]:
        """{path: size} of the regular files of ``directory``, in one command; empty if the
        listing fails (each file is then asked for on its own). A VM's files are opened one
        after the other, and a command each would cost more than the copy of the small ones,
        so with the host's Python the listing also brings their contents along."""
        command = listing_command(
            directory, LISTED_FILE_MAX, LISTED_BYTES_MAX, python="python" in self._readers
        )
        status, out, _ = self._run_with_retry(command, f"listing {directory}")
        try:
            sizes, contents = parse_listing(out, directory)
        except ValueError as exc:
            log.info(
                "%s: unusable listing of %s (%s); files asked one by one", self.host, directory, exc
            )
            return {}
        with self._lock:
            self._contents.update(contents)
        if status != 0 and not sizes:
            log.debug(
                "listing %s on %s failed (%d); sizes asked one by one", directory, self.host, status
            )
        return sizes

    def listed_content(self, remote: str) -> bytes | None:
        """The content the directory listing brought for ``remote`` (handed out once)."""
        with self._lock:
            return self._contents.pop(remote, None)

    def _run_with_retry(self, command: str, what: str) -> tuple[int, bytes, bytes]:
        backoff = self._backoff()
        while True:
            conn = None
            try:
                conn = self._acquire()
                result = conn.run(command)
            except (OSError, EOFError, paramiko.SSHException, SshUnreachable) as exc:
                if conn is not None:
                    self._discard(conn)
                backoff.failed(what, exc)
                continue
            self._release(conn)
            self.stats.add(requests=1)
            return result

    def _backoff(self) -> Backoff:
        return Backoff(
            self.options.retries, self.options.backoff, on_retry=lambda: self.stats.add(retries=1)
        )

    # -- reading ----------------------------------------------------------------------

    @property
    def reader(self) -> str:
        """The remote reader in use (or being tried): python, dd or tail."""
        return self._readers[0]

    @staticmethod
    def _chunks(reader: str, incoming: Incoming, length: int, chunk: int) -> Iterator[bytes]:
        decode = record_chunks if reader == "python" else raw_chunks
        return decode(incoming, length, chunk)

    def fetch(self, file: SshFile, pos: int, end: int, chunk: int) -> Iterator[bytes]:
        """Stream [pos, end) over one channel, resuming after drops."""
        backoff = self._backoff()
        while pos < end:
            conn = chan = incoming = None
            got = 0
            started = time.monotonic()
            try:
                conn = self._acquire()
                reader = self.reader  # one reader per attempt, for command and decoder
                chan = conn.exec(
                    reader_command(reader, file.remote, pos, end, end - pos, end - pos)
                )
                self.stats.add(requests=1)
                incoming = Incoming(chan)
                try:
                    for data in self._chunks(reader, incoming, end - pos, chunk):
                        got += len(data)
                        pos += len(data)
                        yield data
                except StreamEnded:
                    self._command_failed(chan, reader, file, pos)
                    raise
                self._finish_command(chan, file, pos)
                chan.close()
                chan = None
                self._release(conn)
                conn = None
            except _UnsupportedReader as exc:
                self._next_reader(reader, exc)
            except (OSError, EOFError, paramiko.SSHException, StreamEnded, SshUnreachable) as exc:
                if conn is not None:
                    self._discard(conn)
                    conn = None
                if got:
                    backoff.progressed()
                backoff.failed(f"reading {file.location} at offset {pos}", exc)
            finally:
                self.stats.add(
                    bytes_read=got,
                    seconds=time.monotonic() - started,
                    bytes_on_wire=incoming.received if incoming else 0,
                )
                if chan is not None:
                    chan.close()
                if conn is not None:
                    # Abandoned mid-stream (consumer stopped): the channel is closed, the
                    # connection itself is fine.
                    self._release(conn)

    def _next_reader(self, failed: str, exc: _UnsupportedReader) -> None:
        with self._lock:
            if failed in self._readers[:-1]:  # the last one (tail) is never given up
                self._readers.remove(failed)
        log.info(
            "%s: the %s reader does not work there (%s); trying %s",
            self.host,
            failed,
            exc,
            self.reader,
        )

    def _command_failed(self, chan: paramiko.Channel, reader: str, file: SshFile, pos: int) -> None:
        """The stream ended early. Returns if that is a drop, a short file or a garbled
        stream (the caller drops the connection and retries); raises
        :class:`_UnsupportedReader` for a reader this host lacks, and ``TransportError`` with
        the command's stderr for any other failure."""
        # Only a command that closed its output can have an exit status worth waiting for:
        # one stopped mid-stream (a garbled record) may be blocked on a full window forever.
        if not chan.eof_received or not chan.status_event.wait(self.options.timeout):
            return
        status = chan.recv_exit_status()
        if status in (-1, 0) or (reader == "python" and status == READER_SHORT_FILE):
            return
        err = _stderr(chan)
        if not self._reader_confirmed and _reader_missing(reader, status, err, file.remote):
            raise _UnsupportedReader(err.splitlines()[-1] if err else f"exit status {status}")
        raise self._remote_failure(file, pos, status, err)

    def _finish_command(self, chan: paramiko.Channel, file: SshFile, pos: int) -> None:
        status = chan.recv_exit_status()
        if status == -1:
            raise StreamEnded("connection closed before the remote command's exit status")
        if status == 0:
            self._reader_confirmed = True
            return
        raise self._remote_failure(file, pos, status, _stderr(chan))

    def _remote_failure(self, file: SshFile, pos: int, status: int, err: str) -> Exception:
        return errors.TransportError(
            f"reading {file.location} on {self.host} at offset {pos}: remote command failed "
            f"({status}): {err}"
        )

    def fetch_parallel(self, file: SshFile, pos: int, end: int, chunk: int) -> Iterator[bytes]:
        """Segments striped over ``channels`` connections, yielded in order."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.channels, thread_name_prefix="vcbproxy-ssh"
                )
            executor = self._executor
        if not self._reader_confirmed:
            # Settle on a remote reader once before fanning out.
            yield from self.fetch(file, pos, pos + min(CHUNK, end - pos), chunk)
            pos = min(end, pos + CHUNK)
        segment = segment_size(self.channels)
        segments = [(start, min(end, start + segment)) for start in range(pos, end, segment)]
        stripes = min(self.channels, len(segments))
        handoffs: list[queue.Queue] = [queue.Queue(maxsize=1) for _ in range(stripes)]
        stop = threading.Event()
        futures = [
            executor.submit(self._stripe, file, segments[i::stripes], segment, handoffs[i], stop)
            for i in range(stripes)
        ]
        try:
            for k in range(len(segments)):
                item = handoffs[k % stripes].get()
                if isinstance(item, BaseException):
                    raise item
                yield from _drain(item, chunk)
        finally:
            stop.set()
            for handoff in handoffs:  # a stripe blocked handing over sees `stop` next
                with contextlib.suppress(queue.Empty):
                    handoff.get_nowait()
            for future in futures:
                future.cancel()

    def _stripe(
        self,
        file: SshFile,
        segments: list[tuple[int, int]],
        segment: int,
        handoff: queue.Queue,
        stop: threading.Event,
    ) -> None:
        """Read ``segments`` (every ``stripes``-th one) with one remote command; hand each over.

        If the command breaks, the segment it was in and the rest are read one by one with
        ``fetch``, which resumes and retries; an error that survives that reaches the consumer.
        """
        done = 0
        conn = chan = None
        try:
            try:
                conn = self._acquire()
                first, end = segments[0][0], segments[-1][1]
                stride = segments[1][0] - first if len(segments) > 1 else segment
                reader = self.reader
                chan = conn.exec(
                    reader_command(reader, file.remote, first, end, segment, stride), window=segment
                )
                self.stats.add(requests=len(segments))
                incoming = Incoming(chan)
                for start, stop_at in segments:
                    started = time.monotonic()
                    on_wire = incoming.received
                    parts = list(self._chunks(reader, incoming, stop_at - start, CHUNK))
                    self.stats.add(
                        bytes_read=stop_at - start,
                        seconds=time.monotonic() - started,
                        bytes_on_wire=incoming.received - on_wire,
                    )
                    if not _hand_over(handoff, parts, stop):
                        return
                    done += 1
                self._finish_command(chan, file, segments[-1][1])
            except (OSError, EOFError, paramiko.SSHException, StreamEnded, SshUnreachable) as exc:
                log.info(
                    "reading %s: a parallel channel broke (%s); re-reading %d segment(s) "
                    "one by one",
                    file.location,
                    describe(exc),
                    len(segments) - done,
                )
                self.stats.add(retries=1)
                if conn is not None:
                    self._discard(conn)
                    conn = None
                for start, stop_at in segments[done:]:
                    if not _hand_over(handoff, list(self.fetch(file, start, stop_at, CHUNK)), stop):
                        return
        except BaseException as exc:  # noqa: BLE001 - raised again in the consuming thread
            _hand_over(handoff, exc, stop)
        finally:
            if chan is not None:
                chan.close()
            if conn is not None:
                self._release(conn)


def _hand_over(handoff: queue.Queue, item, stop: threading.Event) -> bool:
    """Put ``item`` for the consumer; False once the consumer has gone away."""
    while not stop.is_set():
        try:
            handoff.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


def segment_size(channels: int) -> int:
    """Bytes per parallel segment: per stripe one waiting, one being read and one in the
    window, plus the one being consumed, fit in ``BUFFER_BUDGET``."""
    size = min(SEGMENT, BUFFER_BUDGET // (3 * channels + 1))
    return max(CHUNK, size - size % CHUNK)


def _drain(parts: list[bytes], chunk: int) -> Iterator[bytes]:
    """Yield a fetched segment's parts (cut to ``chunk``), letting go of each once yielded,
    so a segment's memory returns while it is consumed rather than after."""
    parts.reverse()
    while parts:
        part = parts.pop()
        if chunk >= len(part):
            yield part
            continue
        for i in range(0, len(part), chunk):
            yield part[i : i + chunk]


class _UnsupportedReader(Exception):
    """The remote reader being tried is missing or unusable on this host."""


def _reader_missing(reader: str, status: int, err: str, remote: str) -> bool:
    """Whether a failed first command means the host lacks ``reader`` (so the next one is
    tried) rather than that the file cannot be read (reported as it is)."""
    err = err.replace(remote, "")  # a path may hold any of the words below
    if reader == "python":
        # The script reports the file's own errors with READER_FILE_ERROR; anything else
        # (no Python: 127, exec refused: 126, an interpreter that cannot start) is the reader.
        return status not in (READER_SHORT_FILE, READER_FILE_ERROR)
    if reader == "dd":
        return any(word in err for word in ("iflag", "skip_bytes", "invalid", "unrecognized"))
    return False


def _stderr(chan: paramiko.Channel) -> str:
    return chan.recv_stderr(4096).decode(errors="replace").strip()
