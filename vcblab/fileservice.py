"""The lab's datastore file service: ``/folder/<path>?dcPath=<dc>&dsName=<ds>``.

What vcbproxy's network transports (nbd/nbdssl) read and what restore uploads to, with the
semantics of ESXi/vCenter's ``/folder`` handler: authenticated by the SOAP session cookie,
``Range`` answered with 206, ``PUT`` creating or overwriting a file. Bodies are streamed and
never held in memory: ``socket.sendfile`` on the plain-HTTP port (the raw-speed path the bench
compares with nginx), 1 MiB reads over TLS. The drop and throttle fault switches act here.

Also holds the small HTTP helpers the other data-plane handlers (NFC, control) share.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import stat
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from vcblab.httpbody import BodyError, ChunkedReader, is_chunked
from vcblab.readers import owner_of, places_of, reader_of
from vcblab.throttle import Dropped, Pacer, cut

log = logging.getLogger(__name__)

PREFIX = "/folder/"
TLS_CHUNK = 1 << 20
UPLOAD_SUFFIX = ".labupload"
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.I)


class HttpError(Exception):
    """An error answer: status and a one-line reason (the body of the reply)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


# -- helpers shared by the data-plane handlers --------------------------------------------


def is_tls(req) -> bool:
    """True on the HTTPS port (the handler class's ``tls`` flag)."""
    return req.tls


def reply(
    req,
    status: int,
    body: bytes = b"",
    content_type: str = "text/plain; charset=utf-8",
    headers: dict[str, str] | None = None,
) -> None:
    """A complete small answer, always with Content-Length (keep-alive stays usable)."""
    req.send_response(status)
    req.send_header("Content-Type", content_type)
    req.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        req.send_header(name, value)
    req.end_headers()
    if req.command != "HEAD" and body:
        req.wfile.write(body)


def reply_error(req, err: HttpError) -> None:
    reply(req, err.status, (err.reason + "\n").encode(), headers=err.headers)


def reply_json(req, status: int, obj) -> None:
    reply(req, status, json.dumps(obj, sort_keys=True).encode(), "application/json")


BASIC = "basic"  # session_of's answer for a request authenticated by Basic credentials


def session_of(req, lab):
    """The SOAP session named by the request's cookie, else ``BASIC`` for valid Basic
    credentials (the 401 advertises Basic, and ESXi's file service takes them), else 401."""
    session = lab.session_for_cookie(req.headers.get("Cookie"))
    if session is not None:
        return session
    credentials = _basic_credentials(req.headers.get("Authorization"))
    if credentials is not None and lab.credentials_ok(*credentials):
        return BASIC
    raise HttpError(
        401,
        "not authenticated: no valid vmware_soap_session cookie or Basic credentials",
        {"WWW-Authenticate": 'Basic realm="VMware HTTP server"'},
    )


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def query_of(req) -> tuple[str, dict[str, str]]:
    """(unquoted path, first value of each query parameter)."""
    parts = urlsplit(req.path)
    params = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return unquote(parts.path), params


# -- the file service ----------------------------------------------------------------------


def resolve(lab, path: str, params: dict[str, str]) -> Path:
    """The file a ``/folder`` URL names, checked to stay inside its datastore."""
    dc, ds = params.get("dcPath"), params.get("dsName")
    if not dc or not ds:
        raise HttpError(404, "dcPath and dsName are required")
    root = lab.datastore_dir(dc, ds)
    if root is None:
        raise HttpError(404, f"no datastore {ds!r} in datacenter {dc!r}")
    rel = path[len(PREFIX) :]
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\x00" in rel or ".." in parts or "\\" in rel:
        raise HttpError(403, f"path {rel!r} is not inside datastore {ds!r}")
    root = Path(root).resolve()
    target = root.joinpath(*[p for p in parts if p not in ("", ".")])
    # Symlinks must not lead out of the datastore either.
    if not target.resolve().is_relative_to(root):
        raise HttpError(403, f"path {rel!r} is not inside datastore {ds!r}")
    return target


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single ``bytes=`` range, None to send everything.

    Multi-range and malformed headers are ignored (RFC 9110 allows answering 200);
    a range that starts past the end is refused with 416.
    """
    if not header:
        return None
    m = _RANGE.match(header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0:
            raise HttpError(416, "empty suffix range", {"Content-Range": f"bytes */{size}"})
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise HttpError(
            416,
            f"range {header!r} not satisfiable for {size} bytes",
            {"Content-Range": f"bytes */{size}"},
        )
    return start, end


def handle(req, lab) -> None:
    """Answer one ``/folder`` request (GET, HEAD or PUT) on either port."""
    try:
        if lab.faults.take_one("folder_unauthorized"):
            raise HttpError(
                401,
                "not authenticated: the session is no longer valid "
                "(lab fault switch folder_unauthorized)",
                {"WWW-Authenticate": 'Basic realm="VMware HTTP server"'},
            )
        session = session_of(req, lab)
        path, params = query_of(req)
        target = resolve(lab, path, params)
        if req.command in ("GET", "HEAD"):
            _get(req, lab, target, _Reading(req, lab, session, params, target))
        elif req.command == "PUT":
            _put(req, lab, target)
        else:
            raise HttpError(
                405, f"{req.command} not supported on /folder", {"Allow": "GET, HEAD, PUT"}
            )
    except HttpError as err:
        if req.command == "PUT":
            # The unread body would be parsed as the next request; close instead.
            req.close_connection = True
        reply_error(req, err)
    except Dropped:
        cut(req)
    except (BrokenPipeError, ConnectionResetError) as exc:
        log.debug("client went away during %s %s: %s", req.command, req.path, exc)
        req.close_connection = True


class _Reading:
    """Who reads what, for the readers' record and the per-host throttle: the file's VM and
    its host (vcblab.readers)."""

    def __init__(self, req, lab, session, params: dict[str, str], target: Path):
        dc = lab.datacenter_at(params.get("dcPath") or "")
        self.datastore = f"{dc.path}/{params.get('dsName')}"
        self.vm = owner_of(lab, target)
        self.host = self.vm.host.name if self.vm is not None and self.vm.host else None
        self.reader = reader_of(req, session)
        self.lab = lab

    def counted(self):
        return self.lab.readers.reading(self.reader, places_of(self.datastore, self.vm))


def _get(req, lab, target: Path, reading: _Reading) -> None:
    try:
        f = open(target, "rb")  # noqa: SIM115 - closed below, kept open across the send
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise HttpError(404, f"{target.name}: no such file") from None
    except PermissionError:
        raise HttpError(403, f"{target.name}: permission denied") from None
    with f:
        st = os.fstat(f.fileno())
        if not _is_regular(st):
            raise HttpError(404, f"{target.name}: not a file")
        size = st.st_size
        rng = parse_range(req.headers.get("Range"), size)
        start, end = rng if rng else (0, size - 1)
        count = end - start + 1 if size else 0
        req.send_response(206 if rng else 200)
        req.send_header("Content-Type", "application/octet-stream")
        req.send_header("Accept-Ranges", "bytes")
        req.send_header("Content-Length", str(count))
        if rng:
            req.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        req.end_headers()
        if req.command == "HEAD" or count == 0:
            return
        with reading.counted():
            send_file(req, lab, f, start, count, host=reading.host)


def _is_regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def send_file(req, lab, f, offset: int, count: int, host: str | None = None) -> None:
    """Send ``count`` bytes of ``f`` from ``offset``, paced by the fault switches (and by
    ``host``'s own link, when given)."""
    req.wfile.flush()
    pacer = Pacer(lab, host)
    if not is_tls(req):
        if pacer.unpaced:
            req.connection.sendfile(f, offset, count)
            return
        while count > 0:
            n = pacer.next_chunk(count)
            sent = req.connection.sendfile(f, offset, n)
            if sent <= 0:
                raise BrokenPipeError("sendfile sent nothing")
            pacer.done(sent)
            offset += sent
            count -= sent
        return
    buf = bytearray(TLS_CHUNK)
    view = memoryview(buf)
    f.seek(offset)
    while count > 0:
        n = pacer.next_chunk(count)
        got = f.readinto(view[:n])
        if not got:
            raise Dropped("file shrank while being sent")  # headers are gone: cut
        req.wfile.write(view[:got])
        pacer.done(got)
        count -= got


class _Bounded:
    """``read(n)`` over the next ``length`` bytes of a Content-Length body."""

    def __init__(self, rfile, length: int):
        self.rfile, self.left = rfile, length

    def read(self, n: int) -> bytes:
        if self.left <= 0:
            return b""
        data = self.rfile.read(min(n, self.left))
        if not data:
            raise BodyError(400, f"body ended {self.left} bytes short")
        self.left -= len(data)
        return data


def _put(req, lab, target: Path) -> None:
    # Go's net/http (govmomi's Datastore.Upload of a stream) sends a body of unknown length
    # chunked; ESXi's file service takes it as it takes one with a Content-Length.
    if is_chunked(req.headers):
        body = ChunkedReader(req.rfile)
    else:
        length_header = req.headers.get("Content-Length")
        if length_header is None or not length_header.strip().isdigit():
            raise HttpError(411, "PUT needs a Content-Length or chunked transfer coding")
        body = _Bounded(req.rfile, int(length_header))
    if target.is_dir():
        raise HttpError(403, f"{target.name} is a directory")
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise HttpError(403, f"a parent of {target.name} is a file") from None
    tmp = target.with_name(target.name + UPLOAD_SUFFIX)
    # The drop fault cuts uploads too (a host dropping a restore mid-body): the connection is
    # closed after N body bytes with no answer. Only a body that reaches N spends a drop, so a
    # small .vmx or descriptor PUT never uses up the budget.
    pacer = Pacer(lab)
    try:
        with open(tmp, "wb") as out:
            while True:
                data = body.read(pacer.next_chunk(TLS_CHUNK))
                if not data:
                    break
                out.write(data)
                pacer.done(len(data))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BodyError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise HttpError(err.status, err.reason) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    reply(req, 200 if existed else 201)
