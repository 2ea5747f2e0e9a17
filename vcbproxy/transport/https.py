"""Network modes: the datastore file service (``/folder``) of vCenter/ESXi.

``nbdssl`` reads over HTTPS, verified with the session's TLS context (and its pinned
thumbprint, if any); ``nbd`` reads the same service over plain HTTP on
``HttpOptions.nbd_port``, which only some servers offer. Both authenticate with the
session cookie and read ranges with ``Range`` requests, so an interrupted transfer
resumes from the last byte received instead of starting the file again.

Speed matters here (the bench compares with a raw ranged download): one GET per
``stream`` call, 1 MiB reads straight from the socket's buffered reader (``read(n)``
fills one fresh ``bytes`` object without an intermediate copy), and persistent
connections kept in a small pool.
"""

from __future__ import annotations

import http.client
import logging
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from urllib.parse import urlsplit

from vcbproxy import errors
from vcbproxy.models import DatastorePath
from vcbproxy.tls import cert_digest, normalise_thumbprint, pretty_thumbprint
from vcbproxy.transport.base import Session, Transport
from vcbproxy.transport.options import HttpOptions
from vcbproxy.transport.retry import Backoff, describe

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_IDLE = 8  # idle connections kept per server
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.I)


class _Retryable(Exception):
    """A failure worth another attempt (5xx, short body, wrong range)."""


class _ConnectionPool:
    """Idle persistent connections per (scheme, host, port), checked out exclusively.

    Check-out rather than one connection per thread: two streams live at once in one
    thread (a chain reading two layers) must not share a socket.
    """

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None, timeout: float, thumbprint: str | None
    ):
        self._ssl_context = ssl_context
        self._timeout = timeout
        self._thumbprint = normalise_thumbprint(thumbprint)
        self._idle: dict[tuple[str, str, int], deque[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def acquire(self, scheme: str, host: str, port: int) -> tuple[http.client.HTTPConnection, bool]:
        """A connection and whether it was reused (a reused one may have gone stale)."""
        with self._lock:
            if self._closed:
                raise errors.TransportError("transport already closed")
            idle = self._idle.get((scheme, host, port))
            if idle:
                return idle.pop(), True
        if scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=self._timeout, context=self._ssl_context
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._timeout)
        return conn, False

    def connect(self, conn: http.client.HTTPConnection) -> None:
        # Explicit connect (instead of http.client's implicit one) so every new TLS
        # session, including reconnects after "Connection: close", is checked against the pin.
        conn.connect()
        if self._thumbprint and isinstance(conn, http.client.HTTPSConnection):
            der = conn.sock.getpeercert(binary_form=True) or b""
            actual = cert_digest(der, len(self._thumbprint))
            if actual != self._thumbprint:
                conn.close()
                algorithm = "sha1" if len(self._thumbprint) == 40 else "sha256"
                raise errors.ConnectionFailure(
                    f"TLS certificate of {conn.host}:{conn.port} has {algorithm} thumbprint "
                    f"{pretty_thumbprint(actual)}, not the pinned {pretty_thumbprint(self._thumbprint)}"
                )

    def release(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, deque())
            if not self._closed and len(idle) < MAX_IDLE and conn.sock is not None:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()


class HttpFile:
    """One datastore file read over the file service."""

    holes_known = False

    def __init__(self, transport: _FileServiceTransport, location: DatastorePath, url: str):
        self._t = transport
        self.location = location
        self.url = url
        parts = urlsplit(url)
        self._scheme = parts.scheme
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._key = (self._scheme, self._host, self._port)
        self.size = self._probe_size()

    def __repr__(self) -> str:
        return f"HttpFile({self.location}, size={self.size})"

    # -- requests ---------------------------------------------------------------------

    def _request(
        self, method: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send one request; a stale pooled connection is replaced once without counting,
        and a 401 (the session expired) is sent once more after logging in again."""
        conn, resp, cookie = self._request_once(method, headers)
        if resp.status == 401 and self._t.reauthenticate(cookie):
            self._finish(conn, resp, drain=True)
            conn, resp, _ = self._request_once(method, headers)
        return conn, resp

    def _request_once(
        self, method: str, extra: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str]:
        cookie = self._t.cookie
        headers = {"Cookie": cookie, **extra} if cookie else dict(extra)
        pool = self._t.pool
        conn, reused = pool.acquire(*self._key)
        while True:
            try:
                if conn.sock is None:
                    self._connect(conn)
                conn.request(method, self._target, headers=headers)
                self._t.stats.add(requests=1)
                return conn, conn.getresponse(), cookie
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if not reused:
                    raise
                # The server closed an idle keep-alive connection: not a transfer failure.
                reused = False
            except BaseException:
                conn.close()
                raise

    def _connect(self, conn: http.client.HTTPConnection) -> None:
        try:
            self._t.pool.connect(conn)
        except ssl.SSLCertVerificationError as exc:
            raise errors.ConnectionFailure(
                f"TLS verification of {self._host}:{self._port} failed: {exc.verify_message}; "
                f"pin the certificate with --thumbprint or give --ca-file"
            ) from exc
        except ConnectionRefusedError as exc:
            if self._scheme == "http":
                raise errors.TransportError(
                    f"the server offers no plain-HTTP file service on port {self._port}; "
                    f"use -m nbdssl"
                ) from exc
            raise

    def _check(self, resp: http.client.HTTPResponse) -> None:
        status = resp.status
        if status in (200, 206):
            return
        if status == 401:
            raise errors.AuthError(
                f"the server refused the session reading {self.location} (HTTP 401): "
                f"the session expired; log in again"
            )
        if status == 403:
            raise errors.AuthError(f"permission denied reading {self.location} (HTTP 403)")
        if status == 404:
            raise errors.NotFoundError(f"{self.location} not found on the server (HTTP 404)")
        if status >= 500:
            raise _Retryable(f"HTTP {status} {resp.reason}")
        raise errors.TransportError(
            f"reading {self.location}: unexpected HTTP {status} {resp.reason}"
        )

    def _finish(
        self,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        *,
        drain: bool = False,
    ) -> None:
        """Give the connection back if its response was read to the end, else drop it."""
        if drain and not resp.isclosed() and (resp.length or 0) <= 64 << 10:
            try:
                resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                return
        if resp.isclosed() and not resp.will_close:
            self._t.pool.release(self._key, conn)
        else:
            conn.close()

    def _backoff(self) -> Backoff:
        return Backoff(
            self._t.options.retries,
            self._t.options.backoff,
            on_retry=lambda: self._t.stats.add(retries=1),
        )

    # -- size -------------------------------------------------------------------------

    def _probe_size(self) -> int:
        backoff = self._backoff()
        while True:
            try:
                return self._size_once()
            except (OSError, http.client.HTTPException, _Retryable) as exc:
                backoff.failed(f"size of {self.location}", exc)

    def _size_once(self) -> int:
        conn, resp = self._request("HEAD", {})
        length = resp.getheader("Content-Length")
        if resp.status == 200 and length is not None:
            self._finish(conn, resp, drain=True)
            return int(length)
        if resp.status not in (200, 400, 405, 501):
            self._finish(conn, resp, drain=True)
            self._check(resp)
        self._finish(conn, resp, drain=True)
        # No usable HEAD (vcsim): one byte by Range tells the size in Content-Range.
        conn, resp = self._request("GET", {"Range": "bytes=0-0"})
        try:
            if resp.status in (206, 416):
                match = _CONTENT_RANGE.match(resp.getheader("Content-Range") or "")
                if match and match.group(3) != "*":
                    return int(match.group(3))
                raise errors.TransportError(
                    f"size of {self.location}: the server sent no usable Content-Range"
                )
            self._check(resp)
            length = resp.getheader("Content-Length")
            if length is None:
                raise errors.TransportError(f"size of {self.location}: the server sent no length")
            return int(length)
        finally:
            self._finish(conn, resp, drain=True)

    # -- data -------------------------------------------------------------------------

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        return b"".join(self.stream(offset, length))

    def stream(self, offset: int, length: int, chunk: int = CHUNK) -> Iterator[bytes]:
        if offset < 0 or length < 0:
            raise ValueError(f"bad range {offset}+{length}")
        end = min(offset + length, self.size)
        return self._stream(offset, end, max(1, chunk))

    def _stream(self, pos: int, end: int, chunk: int) -> Iterator[bytes]:
        stats = self._t.stats
        backoff = self._backoff()
        while pos < end:
            conn = resp = None
            started = time.monotonic()
            got = 0
            try:
                conn, resp = self._request("GET", {"Range": f"bytes={pos}-{end - 1}"})
                self._check(resp)
                skip = self._position_body(resp, pos, end)
                while skip:
                    skipped = resp.read(min(skip, chunk))
                    if not skipped:
                        raise _Retryable("body ended before the requested offset")
                    skip -= len(skipped)
                read = resp.read
                while pos < end:
                    data = read(min(chunk, end - pos))
                    if not data:
                        raise _Retryable(f"connection closed after {got} bytes")
                    n = len(data)
                    pos += n
                    got += n
                    yield data
            except (OSError, http.client.HTTPException, _Retryable) as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                if got:
                    backoff.progressed()
                backoff.failed(f"reading {self.location} at offset {pos}", exc)
            finally:
                stats.add(bytes_read=got, seconds=time.monotonic() - started)
                if conn is not None and resp is not None:
                    # Unread body (stream abandoned, or a 200 longer than asked): not reusable.
                    self._finish(conn, resp)

    def _position_body(self, resp: http.client.HTTPResponse, pos: int, end: int) -> int:
        """Bytes to discard before ``pos`` (only when a server ignores Range)."""
        if resp.status == 206:
            match = _CONTENT_RANGE.match(resp.getheader("Content-Range") or "")
            if not match or match.group(1) is None or int(match.group(1)) != pos:
                raise _Retryable(
                    f"server answered Range {pos}- with {resp.getheader('Content-Range')!r}"
                )
            return 0
        log.debug("%s: server ignored Range, skipping %d bytes", self.location, pos)
        return pos

    def close(self) -> None:
        """Nothing per file: connections belong to the transport's pool."""


class _FileServiceTransport(Transport):
    scheme: str = "https"

    def __init__(
        self, *, session: Session, options: HttpOptions, datacenter: str | None = None
    ) -> None:
        super().__init__()
        self.session = session
        self.options = options
        # The VM's datacenter: a datastore name means one datastore only inside it (dcPath).
        self.datacenter = datacenter
        self.cookie = session.cookie
        self._auth_lock = threading.Lock()
        tls = self.scheme == "https"
        self.pool = _ConnectionPool(
            ssl_context=session.ssl_context if tls else None,
            timeout=options.timeout,
            thumbprint=session.thumbprint if tls else None,
        )

    def reauthenticate(self, refused_cookie: str) -> bool:
        """After a 401 for ``refused_cookie``: whether a new cookie is there to try (the
        session logged in again, here or in another thread)."""
        renew = getattr(self.session, "reauthenticate", None)  # sessions that cannot: no retry
        if renew is None:
            return False
        with self._auth_lock:
            if self.cookie == refused_cookie:
                self.cookie = renew(refused_cookie)
            return self.cookie != refused_cookie

    def url(self, file: DatastorePath) -> str:
        return self.session.file_url(file, scheme="https", datacenter=self.datacenter)

    def open(self, *, file: DatastorePath) -> HttpFile:
        try:
            return HttpFile(self, file, self.url(file))
        except errors.VcbProxyError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise errors.TransportError(f"opening {file}: {describe(exc)}") from exc

    def close(self) -> None:
        self.pool.close()


class NbdSslTransport(_FileServiceTransport):
    """HTTPS to the datastore file service, TLS verified by the session's rules."""

    name = "nbdssl"
    request_cost = 64 << 10  # a ranged GET on a kept-alive connection: one round trip
    scheme = "https"


class NbdTransport(_FileServiceTransport):
    """Plain HTTP to the file service on ``HttpOptions.nbd_port``: the session cookie and the
    data travel unencrypted, as VCB's nbd mode did; use it on a trusted backup network."""

    name = "nbd"
    request_cost = 64 << 10
    scheme = "http"

    def url(self, file: DatastorePath) -> str:
        return self.session.file_url(
            file, scheme="http", port=self.options.nbd_port, datacenter=self.datacenter
        )
