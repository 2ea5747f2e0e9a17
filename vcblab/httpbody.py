"""Request bodies as HTTP/1.1 frames them: ``Content-Length`` or ``Transfer-Encoding: chunked``.

govmomi (Go's net/http) sends SOAP requests and ``/folder`` uploads from a stream without a
length, i.e. chunked (RFC 9112 section 7.1); vSphere accepts both framings, so the lab does.
"""

from __future__ import annotations


class BodyError(Exception):
    """A body that cannot be read: ``status`` is the HTTP answer (400, 411, 413)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


MAX_CHUNK_LINE = 4096


class ChunkedReader:
    """File-like ``read(n)`` over a chunked body; b"" once the last chunk and trailers are read."""

    def __init__(self, rfile):
        self.rfile = rfile
        self.left = 0  # bytes left in the current chunk
        self.done = False
        self.received = 0

    def _line(self) -> bytes:
        line = self.rfile.readline(MAX_CHUNK_LINE + 1)
        if not line:
            raise BodyError(400, f"chunked body ended after {self.received} bytes")
        if len(line) > MAX_CHUNK_LINE:
            raise BodyError(400, "chunk header line too long")
        return line

    def _next_chunk(self) -> None:
        size_text = self._line().split(b";", 1)[0].strip()  # chunk extensions are ignored
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BodyError(400, f"bad chunk size {size_text[:32]!r}") from None
        if size < 0:
            raise BodyError(400, "negative chunk size")
        if size == 0:
            while self._line() not in (b"\r\n", b"\n"):  # trailer fields: read and dropped
                pass
            self.done = True
        self.left = size

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while not self.done and (n < 0 or len(out) < n):
            if self.left == 0:
                self._next_chunk()
                continue
            want = self.left if n < 0 else min(self.left, n - len(out))
            data = self.rfile.read(want)
            if not data:
                raise BodyError(400, f"chunked body ended after {self.received} bytes")
            out += data
            self.left -= len(data)
            self.received += len(data)
            if self.left == 0 and self.rfile.read(2) not in (b"\r\n",):
                raise BodyError(400, "chunk not followed by CRLF")
        return bytes(out)


def is_chunked(headers) -> bool:
    codings = [c.strip().lower() for c in headers.get("Transfer-Encoding", "").split(",") if c]
    return bool(codings) and codings[-1] == "chunked"


def read_all(rfile, headers, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes (413 beyond, 411 without any framing)."""
    if is_chunked(headers):
        reader = ChunkedReader(rfile)
        data = reader.read(limit + 1)  # stops at the last chunk, or one byte past the limit
        if len(data) > limit:
            raise BodyError(413, f"request body larger than {limit} bytes")
        return data
    length = headers.get("Content-Length", "").strip()
    if not length.isdigit():
        raise BodyError(411, "the request has neither Content-Length nor chunked coding")
    if int(length) > limit:
        raise BodyError(413, f"request body larger than {limit} bytes")
    data = rfile.read(int(length))
    if len(data) != int(length):
        raise BodyError(400, f"body ended after {len(data)} of {length} bytes")
    return data
