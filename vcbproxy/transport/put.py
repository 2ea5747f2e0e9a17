"""Uploading files to a datastore through the file service (``PUT /folder/...``), for restore.

The same connection rules as the network read modes (``transport/https.py``): the session
cookie, the session's TLS context and pinned thumbprint, persistent connections from the
same pool class. A PUT carries a ``Content-Length`` (servers refuse chunked uploads) and a
body that is streamed from an iterator, never held in memory: a 100 GiB flat extent goes
through in 1 MiB pieces.

A PUT cannot be resumed (the file service takes no ``Content-Range`` on upload), so a
dropped upload fails the file; the restore job then deletes what it uploaded.
"""

from __future__ import annotations

import http.client
import logging
import ssl
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from vcbproxy import errors
from vcbproxy.models import DatastorePath
from vcbproxy.transport.base import Session
from vcbproxy.transport.https import _ConnectionPool
from vcbproxy.transport.retry import describe

log = logging.getLogger(__name__)


class FileUploader:
    """PUT and HEAD on datastore files of one session; a context manager."""

    def __init__(self, session: Session, *, timeout: float = 60.0, datacenter: str | None = None):
        self.session = session
        self.datacenter = datacenter  # holding the datastores uploaded to (dcPath)
        self.cookie = session.cookie
        self.pool = _ConnectionPool(
            ssl_context=session.ssl_context, timeout=timeout, thumbprint=session.thumbprint
        )

    def __enter__(self) -> FileUploader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.pool.close()

    # -- requests -----------------------------------------------------------------------

    def _target(self, location: DatastorePath) -> tuple[tuple[str, str, int], str]:
        parts = urlsplit(
            self.session.file_url(location, scheme="https", datacenter=self.datacenter)
        )
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return (parts.scheme, parts.hostname or "", port), target

    def _connection(self, key, *, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        """A connection to ``key`` and whether it was kept alive (the server may have closed
        it while idle). ``fresh`` never reuses one: a PUT body cannot be sent twice."""
        conn, reused = self.pool.acquire(*key)
        if fresh and reused:
            conn.close()
            reused = False
        if conn.sock is None:
            try:
                self.pool.connect(conn)
            except ssl.SSLCertVerificationError as exc:
                raise errors.ConnectionFailure(
                    f"TLS verification of {key[1]}:{key[2]} failed: {exc.verify_message}; "
                    f"pin the certificate with --thumbprint or give --ca-file"
                ) from exc
            except OSError as exc:
                raise errors.TransportError(
                    f"cannot connect to {key[1]}:{key[2]}: {describe(exc)}"
                ) from exc
        return conn, reused

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        return {"Cookie": self.cookie, **extra} if self.cookie else dict(extra)

    def exists(self, location: DatastorePath) -> bool:
        """Whether the file is on the datastore: HEAD, or a one-byte GET where HEAD is not
        offered (vcsim answers 405); 404 means no, any other refusal is an error."""
        status, reason = self._probe(location, "HEAD", {})
        if status in (400, 405, 501):
            status, reason = self._probe(location, "GET", {"Range": "bytes=0-0"})
        if status == 404:
            return False
        if status in (200, 204, 206, 416):  # 416: an empty file exists too
            return True
        _raise_for(status, reason, location, "checking")
        return False

    def _probe(
        self, location: DatastorePath, method: str, headers: dict[str, str]
    ) -> tuple[int, str]:
        key, target = self._target(location)
        while True:
            conn, reused = self._connection(key)
            try:
                conn.request(method, target, headers=self._headers(headers))
                resp = conn.getresponse()
                resp.read(1 << 16)
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                if not reused:  # a kept-alive connection the server closed: once more
                    raise errors.TransportError(f"checking {location}: {describe(exc)}") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise errors.TransportError(f"checking {location}: {describe(exc)}") from exc
        self._release(key, conn, resp)
        return resp.status, resp.reason

    def put(
        self,
        location: DatastorePath,
        length: int,
        chunks: Iterable[bytes | memoryview],
        *,
        advance: Callable[[int], None] = lambda n: None,
    ) -> None:
        """Upload exactly ``length`` bytes from ``chunks`` to ``location`` (created or overwritten)."""
        key, target = self._target(location)
        conn, _ = self._connection(key, fresh=True)
        sent = 0
        try:
            conn.putrequest("PUT", target, skip_accept_encoding=True)
            for name, value in self._headers(
                {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
            ).items():
                conn.putheader(name, value)
            conn.endheaders()
            for chunk in chunks:
                if sent + len(chunk) > length:
                    raise errors.TransportError(
                        f"uploading {location}: more than the announced {length} bytes"
                    )
                conn.send(chunk)
                sent += len(chunk)
                advance(len(chunk))
            if sent != length:
                raise errors.TransportError(
                    f"uploading {location}: only {sent} of {length} bytes to send"
                )
            resp = conn.getresponse()
            body = resp.read(4096)
        except errors.VcbProxyError:
            conn.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise errors.TransportError(
                f"upload of {location} dropped after {sent} of {length} bytes: {describe(exc)}"
            ) from exc
        except BaseException:
            conn.close()  # a half-sent body must never be reused as the start of a request
            raise
        self._release(key, conn, resp)
        if resp.status not in (200, 201, 204):
            detail = body.decode("utf-8", "replace").strip().splitlines()
            _raise_for(resp.status, detail[0] if detail else resp.reason, location, "uploading")
        log.debug("uploaded %s (%d bytes)", location, length)

    def _release(self, key, conn, resp) -> None:
        if resp.isclosed() and not resp.will_close:
            self.pool.release(key, conn)
        else:
            conn.close()


def _raise_for(status: int, reason: str, location: DatastorePath, doing: str) -> None:
    if status == 401:
        raise errors.AuthError(
            f"the server refused the session {doing} {location} (HTTP 401); log in again"
        )
    if status == 403:
        raise errors.AuthError(f"permission denied {doing} {location} (HTTP 403): {reason}")
    if status == 404:
        raise errors.NotFoundError(
            f"{doing} {location}: datastore or datacenter not found (HTTP 404)"
        )
    raise errors.TransportError(f"{doing} {location}: HTTP {status} {reason}")
